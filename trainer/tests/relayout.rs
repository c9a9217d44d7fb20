//! Checkpoints resumed at another layout, ranks as threads: a run saved at
//! pipe 2 x model 2 continues on one device as the uninterrupted run does,
//! within tensor parallelism's rounding (1e-5); pipeline-only changes (pp 2
//! to 1, 1 to 2) continue bit for bit; tp 1 to 2 and ZeRO-1 over 2 data
//! ranks to 1 (and back) continue within 1e-5; broken checkpoints are
//! refused by name.
//!
//! Why 1e-5 and not bit for bit where tensor parallelism is involved:
//! resharding moves values and never computes (the merge/split identity is
//! bit for bit, checked below), but a tensor-parallel step adds the
//! row-parallel partial sums in another order than one device, so the
//! weights a tp2 run saves differ from the unsplit run's by rounding, and
//! the continued run starts from those.

use std::path::{Path, PathBuf};

use neox_trainer::NeoxArgs;
use neox_trainer::dist::ZeroStage;
use neox_trainer::dist::reshard;
use neox_trainer::metrics::Record;

mod common;
use common::{
    copy_tree, metrics_in, neox_args, one_run_at_a_time, train_data_parallel, train_split,
};

const MODEL: &str = "
num_layers: 3
hidden_size: 32
num_attention_heads: 4
seq_length: 16
pos_emb: rotary
rotary_pct: 0.5
padded_vocab_size: 32
no_weight_tying: true
init_method: small_init
output_layer_init_method: wang_init
optimizer: {type: Adam, params: {lr: 0.01, betas: [0.9, 0.95]}}
lr_decay_style: cosine
lr_decay_iters: 8
warmup: 0.1
min_lr: 0.001
weight_decay: 0.1
gradient_clipping: 1.0
hidden_dropout: 0.0
attention_dropout: 0.0
train_micro_batch_size_per_gpu: 4
log_interval: 1
checkpoint_factor: 4
pipe_partition_method: uniform
";

/// A layout: pipeline stages, data ranks, tensor ranks, ZeRO.
#[derive(Clone, Copy, Debug)]
struct Grid(usize, usize, usize, ZeroStage);

const ONE: Grid = Grid(1, 1, 1, ZeroStage::Off);

impl Grid {
    fn world(self) -> usize {
        self.0 * self.1 * self.2
    }

    /// Its options; the global batch is 8 samples at every layout.
    fn options(self) -> String {
        let zero = match self.3 {
            ZeroStage::Off => 0,
            ZeroStage::One => 1,
            ZeroStage::Two => 2,
        };
        format!(
            "pipe_parallel_size: {}\nmodel_parallel_size: {}\ngradient_accumulation_steps: {}\n\
             zero_optimization: {{stage: {zero}}}\n",
            self.0,
            self.2,
            2 / self.1
        )
    }
}

fn args(extra: &str, grid: Grid) -> NeoxArgs {
    neox_args(MODEL, &format!("{}{extra}", grid.options()), grid.1)
}

/// Trains `train_iters` steps at `grid`, saving into (and loading from) `dir`.
fn run(dir: &Path, train_iters: u64, grid: Grid) -> Result<(), String> {
    run_with(dir, train_iters, grid, "")
}

/// [`run`] with `extra` options.
fn run_with(dir: &Path, train_iters: u64, grid: Grid, extra: &str) -> Result<(), String> {
    let extra = format!(
        "train_iters: {train_iters}\nsave: {d}\nload: {d}\n{extra}",
        d = dir.display()
    );
    let args = args(&extra, grid);
    match grid.0 * grid.2 {
        1 => train_data_parallel(&args, grid.1),
        _ => train_split(&args, grid.world()),
    }
}

/// (iteration, loss, grad norm, lr) of each training record.
fn train_records(dir: &Path) -> Vec<(u64, f64, f64, f64)> {
    metrics_in(dir)
        .into_iter()
        .filter_map(|r| match r {
            Record::Train {
                iteration,
                loss,
                grad_norm,
                lr,
                ..
            } => Some((iteration, loss, grad_norm, lr)),
            _ => None,
        })
        .collect()
}

/// The uninterrupted one-device run of 8 steps.
fn reference() -> Vec<(u64, f64, f64, f64)> {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), 8, ONE).unwrap();
    train_records(dir.path())
}

/// Saves at `from` after 4 steps, then continues to 8 at `to`: the records
/// of steps 5 to 8.
fn relayout(dir: &Path, from: Grid, to: Grid) -> Vec<(u64, f64, f64, f64)> {
    run(dir, 4, from).unwrap_or_else(|e| panic!("{from:?}: {e}"));
    run(dir, 8, to).unwrap_or_else(|e| panic!("{from:?} -> {to:?}: {e}"));
    let records = train_records(dir);
    assert_eq!(records.len(), 8, "{from:?} -> {to:?}: {records:?}");
    records.into_iter().filter(|r| r.0 > 4).collect()
}

fn after_4(records: &[(u64, f64, f64, f64)]) -> Vec<(u64, f64, f64, f64)> {
    records.iter().copied().filter(|r| r.0 > 4).collect()
}

fn assert_close(got: &[(u64, f64, f64, f64)], want: &[(u64, f64, f64, f64)], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs();
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.0, g.3), (w.0, w.3), "{what}: iteration, lr");
        assert!(
            close(g.1, w.1) && close(g.2, w.2),
            "{what}: step {}: loss {} vs {}, norm {} vs {}",
            g.0,
            g.1,
            w.1,
            g.2,
            w.2
        );
    }
}

#[test]
fn pipe_2_x_model_2_resumes_on_one_device() {
    let _serial = one_run_at_a_time();
    let want = reference();
    let dir = tempfile::tempdir().unwrap();
    let got = relayout(dir.path(), Grid(2, 1, 2, ZeroStage::Off), ONE);
    assert_close(&got, &after_4(&want), "pp2 x tp2 -> pp1 x tp1");
    // The split run wrote its shares (its layout in each), the one device
    // its unsplit checkpoint next to them.
    for share in ["pp0-tp0", "pp0-tp1", "pp1-tp0", "pp1-tp1"] {
        let state =
            neox_trainer::checkpoint::read_state(&dir.path().join(share).join("global_step4"))
                .unwrap();
        assert_eq!(state.layout.unwrap().to_string(), "pp2-tp2");
    }
    let state = neox_trainer::checkpoint::read_state(&dir.path().join("global_step8")).unwrap();
    assert_eq!(state.layout, None);
    assert_eq!(state.consumed_train_samples, 64);
}

#[test]
fn pipeline_only_changes_continue_bit_for_bit() {
    let _serial = one_run_at_a_time();
    let want = after_4(&reference());
    let pp2 = Grid(2, 1, 1, ZeroStage::Off);
    for (from, to) in [(pp2, ONE), (ONE, pp2)] {
        let dir = tempfile::tempdir().unwrap();
        let got = relayout(dir.path(), from, to);
        assert_eq!(got, want, "{from:?} -> {to:?}");
    }
}

#[test]
fn tensor_and_zero_layouts_convert_both_ways() {
    let _serial = one_run_at_a_time();
    let want = after_4(&reference());
    for (from, to) in [
        (ONE, Grid(1, 1, 2, ZeroStage::Off)),
        (Grid(1, 2, 2, ZeroStage::One), ONE),
        (ONE, Grid(2, 2, 1, ZeroStage::One)),
        (Grid(2, 2, 1, ZeroStage::One), Grid(1, 1, 2, ZeroStage::Off)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let got = relayout(dir.path(), from, to);
        assert_close(&got, &want, &format!("{from:?} -> {to:?}"));
    }
}

#[test]
fn merging_a_split_checkpoint_and_cutting_it_again_is_exact() {
    use burn::backend::{Autodiff, Flex};
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::record::{BinFileRecorder, FullPrecisionSettings};
    use burn::tensor::Tensor;
    use neox_trainer::dist::tensor_parallel::{TpGroup, layers::Shard};
    use neox_trainer::dist::{GptShard, ParamLayout, merge};
    use neox_trainer::optim::{NeoxOptimizer, OptimConfig, StateRecord};
    type Ad = Autodiff<Flex>;

    /// Each parameter's (step, first moment bits, second moment bits), in
    /// visiting order, as the share's optimizer files hold them.
    struct Moments<'a> {
        states: &'a StateRecord<Ad, GptShard<Ad>>,
        found: Vec<(usize, Vec<u32>, Vec<u32>)>,
    }
    impl ModuleVisitor<Ad> for Moments<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Ad, D>>) {
            let bits = |t: Tensor<Flex, D>| t.into_data().iter::<f32>().map(f32::to_bits).collect();
            let record = self
                .states
                .get(&param.id)
                .expect("a parameter without state");
            let m = record.clone().into_state::<D>().momentum;
            self.found
                .push((m.time, bits(m.moment_1), bits(m.moment_2)));
        }
    }
    let settings = OptimConfig {
        lr: 0.0,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        gradient_clipping: 0.0,
        onebit: None,
        offload: false,
        adam: Default::default(),
    };

    let _serial = one_run_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), 4, Grid(2, 2, 2, ZeroStage::One)).unwrap();
    let saved = reshard::find(dir.path(), None, true).unwrap().unwrap();
    assert_eq!((saved.pp, saved.tp, saved.split), (2, 2, true));
    let whole = reshard::read_whole(&saved, true).unwrap();
    let layout = saved.state.layout.clone().unwrap();
    let device = Default::default();
    let template = merge::filled(&saved.state.model.init::<Ad>(&device), |_, n| vec![0.0; n]);
    // Each share cut from the whole is the share saved, bit for bit: its
    // values, and its moments as ZeRO's two files (ranks 0 and 1) hold them.
    assert_eq!(saved.state.optimizer_shards, 2);
    for p in 0..2 {
        for t in 0..2 {
            let shard = Shard { rank: t, size: 2 };
            let target = reshard::Target::Share {
                layout: layout.clone(),
                stage: p,
                shard,
            };
            let cut = whole.part_for(&target).unwrap();
            let share = GptShard::new(&template, layout.stage(p), shard, TpGroup::single())
                .unwrap()
                .load_file(
                    saved.dirs[p * 2 + t].join("model"),
                    &BinFileRecorder::<FullPrecisionSettings>::new(),
                    &device,
                )
                .unwrap();
            assert!(cut.values == merge::values(&share), "pp{p}-tp{t}: values");
            let dir = &saved.dirs[p * 2 + t];
            let ids = ParamLayout::of::<Ad, _>(&share).ids;
            let optim = NeoxOptimizer::<Ad, GptShard<Ad>>::new(&settings)
                .load(dir, 2, &ids, |_| true, &device)
                .unwrap();
            let states = optim.states();
            let mut moments = Moments {
                states: &states,
                found: Vec::new(),
            };
            share.visit(&mut moments);
            let adam = cut.adam.expect("moments");
            let bits = |v: &Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let cut: Vec<_> = (0..adam.time.len())
                .map(|i| (adam.time[i], bits(&adam.first[i]), bits(&adam.second[i])))
                .collect();
            assert_eq!(cut.len(), moments.found.len());
            assert!(cut.iter().all(|m| m.0 == 4), "pp{p}-tp{t}: steps");
            for (i, (cut, saved)) in cut.iter().zip(&moments.found).enumerate() {
                assert!(cut == saved, "pp{p}-tp{t}: parameter {i}'s moments differ");
            }
        }
    }
}

#[test]
fn broken_split_checkpoints_are_refused_by_name() {
    let _serial = one_run_at_a_time();
    let saved = tempfile::tempdir().unwrap();
    let grid = Grid(2, 1, 2, ZeroStage::Off);
    run(saved.path(), 8, grid).unwrap();
    let copy = |name: &str| -> PathBuf {
        let dir = saved.path().parent().unwrap().join(format!(
            "{}-{name}",
            saved.path().file_name().unwrap().to_string_lossy()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        copy_tree(saved.path(), &dir);
        dir
    };
    let refused = |dir: &Path, grid: Grid, needles: &[&str]| {
        let err = run(dir, 12, grid).expect_err("resumed");
        for needle in needles {
            assert!(err.contains(needle), "{needle:?} not in: {err}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    };
    // A share missing.
    let dir = copy("missing");
    std::fs::remove_dir_all(dir.join("pp1-tp0")).unwrap();
    refused(
        &dir,
        ONE,
        &["pp1-tp0", "missing", "2 stage(s) x 2 tensor rank(s)"],
    );
    // Shares from different iterations.
    let dir = copy("mixed");
    std::fs::write(dir.join("pp0-tp1/latest"), "global_step4").unwrap();
    refused(&dir, ONE, &["different iterations", "pp0-tp1 at 4"]);
    refused_at_same_layout(&copy("mixed-same"), grid);
    // A ZeRO-less share's optimizer file gone.
    let dir = copy("no-optim");
    std::fs::remove_file(dir.join("pp1-tp1/global_step8/optim_decay_rank0.bin")).unwrap();
    refused(&dir, ONE, &["pp1-tp1", "optim_decay_rank0"]);
    // A share's model from another layout.
    let dir = copy("foreign");
    std::fs::copy(
        dir.join("pp0-tp0/global_step8/model.bin"),
        dir.join("pp1-tp0/global_step8/model.bin"),
    )
    .unwrap();
    refused(&dir, ONE, &["pp1-tp0", "model.bin"]);
    // A layout that cannot be made: 4 heads over 3 tensor ranks.
    let dir = copy("tp3");
    refused(
        &dir,
        Grid(1, 1, 3, ZeroStage::Off),
        &["model_parallel_size 3", "not a multiple"],
    );
}

/// Shares at different iterations are refused at the run's own layout too.
fn refused_at_same_layout(dir: &Path, grid: Grid) {
    std::fs::write(dir.join("pp1-tp1/latest"), "global_step4").unwrap();
    let err = run(dir, 12, grid).expect_err("resumed");
    assert!(err.contains("different iterations"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn offline_resharding_resumes_as_resharding_on_load_does() {
    use neox_trainer::dist::PartitionMethod;
    use neox_trainer::dist::pipeline_parallel::partition;

    let _serial = one_run_at_a_time();
    let saved = tempfile::tempdir().unwrap();
    run(saved.path(), 4, Grid(1, 1, 2, ZeroStage::Off)).unwrap();
    let found = reshard::find(saved.path(), None, true).unwrap().unwrap();
    for to in [Grid(2, 1, 1, ZeroStage::Off), ONE] {
        // On load: a copy resumed at `to`.
        let auto = tempfile::tempdir().unwrap();
        copy_tree(saved.path(), auto.path());
        run(auto.path(), 8, to).unwrap();
        // Offline, then resumed at `to`: no resharding left to do.
        let offline = tempfile::tempdir().unwrap();
        let layout = reshard::write(
            &found,
            offline.path(),
            to.0,
            to.2,
            &PartitionMethod::Uniform,
        )
        .unwrap();
        let again = reshard::find(offline.path(), None, true).unwrap().unwrap();
        assert_eq!(again.state.iteration, 4);
        if to.0 > 1 {
            let stages = partition::partition(&PartitionMethod::Uniform, 3, to.0, |_| 0);
            assert_eq!(layout, reshard::Layout::of(&stages, to.2));
            assert_eq!(again.state.layout, Some(layout));
        } else {
            assert!(!again.split && again.state.layout.is_none());
        }
        run(offline.path(), 8, to).unwrap();
        assert_eq!(
            train_records(offline.path()),
            after_4(&train_records(auto.path())),
            "tp2 -> {to:?}"
        );
    }
    // Layouts that cannot be made are refused before anything is written.
    let bad = tempfile::tempdir().unwrap();
    let err = reshard::write(
        &found,
        &bad.path().join("x"),
        1,
        3,
        &PartitionMethod::Uniform,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("model_parallel_size 3"), "{err}");
    assert!(!bad.path().join("x").exists());
}

#[test]
fn finetune_and_no_load_optim_read_any_layout() {
    let _serial = one_run_at_a_time();
    let saved = tempfile::tempdir().unwrap();
    run(saved.path(), 4, ONE).unwrap();
    let from = |grid: Grid, train_iters: u64, extra: &str| {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(saved.path(), dir.path());
        run_with(dir.path(), train_iters, grid, extra).unwrap();
        train_records(dir.path())
    };
    // Weights only, from iteration 0 (fresh optimizer and schedule).
    let want = from(ONE, 4, "finetune: true\n");
    assert_eq!(want.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
    let got = from(Grid(1, 1, 2, ZeroStage::Off), 4, "finetune: true\n");
    assert_close(&got, &want, "finetune at tp 2");
    // Weights and the iteration, fresh optimizer state.
    let want = after_4(&from(ONE, 8, "no_load_optim: true\n"));
    let got = after_4(&from(
        Grid(2, 1, 1, ZeroStage::Off),
        8,
        "no_load_optim: true\n",
    ));
    assert_eq!(got, want, "no_load_optim at pp 2");
    assert_ne!(
        want,
        after_4(&from(ONE, 8, "")),
        "the optimizer state mattered"
    );
}

#[test]
fn grouped_query_attention_reshards_too() {
    // num_kv_heads 2 of 4: the fused QKV is [all q | all k | all v], so a
    // tensor rank's columns are not one block; the merge finds them anyway.
    let _serial = one_run_at_a_time();
    const GQA: &str = "num_kv_heads: 2\n";
    let reference = tempfile::tempdir().unwrap();
    run_with(reference.path(), 8, ONE, GQA).unwrap();
    let want = after_4(&train_records(reference.path()));
    for (from, to) in [
        (Grid(2, 1, 2, ZeroStage::Off), ONE),
        (ONE, Grid(1, 1, 2, ZeroStage::Off)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        run_with(dir.path(), 4, from, GQA).unwrap();
        run_with(dir.path(), 8, to, GQA).unwrap();
        let got = after_4(&train_records(dir.path()));
        assert_close(&got, &want, &format!("GQA {from:?} -> {to:?}"));
    }
}
