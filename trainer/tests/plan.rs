//! The plan's figures against the real thing: its parameter list equals the
//! Burn model's (count, order, shapes) and the Hugging Face export's tensors;
//! its bytes of weights, gradients and optimizer state equal what the
//! trainer allocates, without ZeRO and under ZeRO 1 and 2 on two and three
//! ranks, in fp32 and in mixed precision (f32 weights and their half copy),
//! and 1-bit Adam's compression errors on two ranks.

use std::sync::Arc;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{FloatDType, Int, Tensor, TensorData};
use neox_trainer::device::Cpu;
use neox_trainer::dist::{DataParallel, ParamLayout};
use neox_trainer::optim::NeoxOptimizer;
use neox_trainer::plan::params::{Counts, tensors};
use neox_trainer::plan::{Keeper, Layout, Precision, memory};
use neox_trainer::precision::cast_module;
use neox_trainer::{GptNeox, NeoxArgs, hf};

mod common;

const BASE: &str = "
num_layers: 2
hidden_size: 32
num_attention_heads: 4
seq_length: 16
padded_vocab_size: 40
optimizer: {type: Adam, params: {lr: 0.01}}
train_micro_batch_size_per_gpu: 2
train_iters: 1
hidden_dropout: 0.0
attention_dropout: 0.0
";

/// Model variants: every option that changes a parameter's presence or shape.
const VARIANTS: [(&str, bool); 7] = [
    // (extra options, exportable to Hugging Face)
    ("pos_emb: rotary\nno_weight_tying: true\n", true),
    ("pos_emb: rotary\ngpt_j_residual: true\n", true),
    (
        "pos_emb: rotary\nno_weight_tying: true\nuse_bias_in_attn_linear: false\nintermediate_size: 48\n",
        true,
    ),
    (
        "pos_emb: learned\nmax_position_embeddings: 24\nnorm: rmsnorm\nactivation: swiglu\n\
         intermediate_size: 96\nuse_bias_in_mlp: false\n",
        false,
    ),
    (
        "pos_emb: alibi\nuse_bias_in_norms: false\nexpansion_factor: 3\nno_weight_tying: true\n",
        false,
    ),
    (
        "pos_emb: rotary\nnum_kv_heads: 2\nactivation: geglu\nintermediate_size: 96\n",
        false,
    ),
    (
        "pos_emb: rotary\nnum_kv_heads: 1\ngpt_j_residual: true\ngpt_j_tied: true\n\
         activation: relu\nno_weight_tying: true\n",
        false,
    ),
];

fn args(extra: &str, world: usize) -> NeoxArgs {
    common::neox_args(BASE, extra, world)
}

/// Bytes of the tensors a visitor meets: parameters, or their gradients.
struct Bytes<'a> {
    grads: Option<&'a GradientsParams>,
    total: usize,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Bytes<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.total += match self.grads {
            None => {
                let t = param.val();
                t.shape().num_elements() * t.dtype().size()
            }
            Some(grads) => grads
                .get::<B::InnerBackend, D>(param.id)
                .map_or(0, |g| g.shape().num_elements() * g.dtype().size()),
        };
    }
}

fn bytes_of(model: &GptNeox<Cpu>, grads: Option<&GradientsParams>) -> usize {
    let mut v = Bytes { grads, total: 0 };
    model.visit(&mut v);
    v.total
}

#[test]
fn parameters_equal_the_models_and_the_hugging_face_exports() {
    let device = Default::default();
    for (extra, exportable) in VARIANTS {
        let a = args(extra, 1);
        let list = tensors(&a.model);
        let counts = Counts::of(&list, a.model.num_layers);
        let model: GptNeox<Cpu> = a.model.init(&device);
        assert_eq!(counts.total, model.num_params() as u64, "{extra}");
        let layout = ParamLayout::of::<Cpu, _>(&model);
        let shapes: Vec<Vec<usize>> = list.iter().map(|t| t.burn_shape()).collect();
        assert_eq!(shapes, layout.shapes, "{extra}");
        if !exportable {
            assert!(hf::unsupported(&a.model).is_some(), "{extra}");
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        hf::save(&model, dir.path()).unwrap();
        let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut exported: Vec<(String, Vec<usize>)> = st
            .tensors()
            .into_iter()
            .map(|(name, view)| (name, view.shape().to_vec()))
            .collect();
        exported.sort();
        let mut planned: Vec<(String, Vec<usize>)> = list
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect();
        planned.sort();
        assert_eq!(planned, exported, "{extra}");
        let elements: u64 = exported
            .iter()
            .map(|(_, s)| s.iter().product::<usize>() as u64)
            .sum();
        assert_eq!(elements, counts.total, "{extra}");
    }
}

/// One training step's allocations on each of `ranks` threads: (weights,
/// gradients this rank keeps, optimizer state), in bytes.
fn measured(a: &NeoxArgs, ranks: usize) -> Vec<(usize, usize, usize)> {
    let zero = a.training.zero_stage;
    common::on_thread_ranks(ranks, |comm| {
        let device = Default::default();
        let dp = DataParallel::new(Arc::new(comm), zero);
        let model: GptNeox<Cpu> = a.model.init(&device);
        let model = dp.sync_model(model, &device).unwrap();
        let layout = ParamLayout::of::<Cpu, _>(&model);
        let (b, t) = (a.training.micro_batch_size, a.model.seq_length);
        let ids = |shift: i64| {
            let v: Vec<i64> = (0..(b * t) as i64).map(|i| (i + shift) % 40).collect();
            Tensor::<Cpu, 2, Int>::from_data(TensorData::new(v, [b, t]), &device)
        };
        // As train_step does: the passes on a copy cast to the compute type
        // (the model itself in fp32), the gradients reaching the f32 model.
        let dtype = a.precision.precision.dtype();
        let compute = cast_module(model.clone(), dtype);
        let loss = compute.loss(ids(0), ids(1));
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let grads = dp
            .reduce_gradients(&model, &layout, grads, &device)
            .unwrap();
        let copy = match dtype {
            FloatDType::F32 => 0,
            _ => bytes_of(&compute, None),
        };
        let weights = bytes_of(&model, None) + copy;
        let kept = bytes_of(&model, Some(&grads));
        let mut optim = NeoxOptimizer::new(&a.optim);
        let (model, _) = dp
            .step(&mut optim, 0.01, model, &layout, grads, &device)
            .unwrap();
        let params: Vec<_> = ParamLayout::of::<Cpu, _>(&model)
            .ids
            .into_iter()
            .zip(layout.shapes.iter().map(Vec::len))
            .collect();
        (weights, kept, optim.state_bytes(&params))
    })
}

#[test]
fn weights_gradients_and_optimizer_state_are_estimated_exactly() {
    for (extra, zero, ranks) in [
        (VARIANTS[0].0, 0, 1),
        (VARIANTS[3].0, 0, 1),
        (VARIANTS[0].0, 1, 2),
        (VARIANTS[0].0, 2, 2),
        (VARIANTS[4].0, 2, 3),
        (
            "pos_emb: rotary\nprecision: bfloat16\nbf16: {enabled: true}\n",
            1,
            2,
        ),
        ("pos_emb: rotary\nfp16: {enabled: true}\n", 0, 1),
    ] {
        let a = args(
            &format!("{extra}zero_optimization: {{stage: {zero}}}\n"),
            ranks,
        );
        let precision = match a.precision.precision {
            neox_trainer::precision::Precision::Fp32 => Precision::Fp32,
            neox_trainer::precision::Precision::Bf16 => Precision::Bf16,
            neox_trainer::precision::Precision::Fp16 => Precision::Fp16,
        };
        let layout = Layout {
            pp: 1,
            dp: ranks,
            tp: 1,
            zero,
            offload: false,
            onebit: false,
            precision,
            keeper: Keeper::NeoxTrain,
            checkpoint_activations: false,
            checkpoint_num_layers: 1,
            partition_activations: false,
            micro_batch: a.training.micro_batch_size,
            grad_accum: 1,
        };
        let estimate = memory::per_rank(&a.model, &tensors(&a.model), &layout);
        let real = measured(&a, ranks);
        let max = |f: fn(&(usize, usize, usize)) -> usize| real.iter().map(f).max().unwrap() as u64;
        let what = format!("{extra} zero {zero} on {ranks}: {real:?}");
        assert_eq!(estimate.params, max(|r| r.0), "{what}");
        assert_eq!(estimate.grads, max(|r| r.1), "{what}");
        assert_eq!(estimate.optimizer, max(|r| r.2), "{what}");
        if zero > 0 {
            // The ranks' Adam moments add up to everything once.
            let total: usize = real.iter().map(|r| r.2).sum();
            assert_eq!(total as u64, 8 * estimate.stage_params, "{what}");
        }
    }
}

/// 1-bit Adam on two ranks keeps, besides its two moments, each rank's
/// compression errors once it compresses (worker errors over each padded
/// tensor, server errors over the rank's chunk): the estimate is what each
/// rank's checkpoint holds, and the plan's optimizer line says so.
#[test]
fn onebit_adams_compression_errors_are_estimated_exactly() {
    let _serial = common::one_run_at_a_time();
    let ranks = 2;
    let dir = tempfile::tempdir().unwrap();
    let a = args(
        &format!(
            "pos_emb: rotary\noptimizer: {{type: OneBitAdam, params: {{lr: 0.001, \
             freeze_step: 2}}}}\ntrain_iters: 4\nsave: {}\n",
            dir.path().display()
        ),
        ranks,
    );
    common::train_data_parallel(&a, ranks).unwrap_or_else(|e| panic!("{e}"));
    let floats = |name: String| -> u64 {
        let bytes = std::fs::read(dir.path().join("global_step4").join(name)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensors()
            .iter()
            .map(|(_, t)| 4 * t.shape().iter().product::<usize>() as u64)
            .sum()
    };
    let layout = Layout {
        pp: 1,
        dp: ranks,
        tp: 1,
        zero: 0,
        offload: false,
        onebit: true,
        precision: Precision::Fp32,
        keeper: Keeper::NeoxTrain,
        checkpoint_activations: false,
        checkpoint_num_layers: 1,
        partition_activations: false,
        micro_batch: a.training.micro_batch_size,
        grad_accum: 1,
    };
    let estimate = memory::per_rank(&a.model, &tensors(&a.model), &layout);
    let moments = floats("onebit_adam.safetensors".into());
    assert_eq!(moments, 8 * estimate.stage_params);
    for rank in 0..ranks {
        let errors = floats(format!("onebit_errors_rank{rank}.safetensors"));
        assert!(errors > 4 * estimate.stage_params, "rank {rank}: {errors}");
        assert_eq!(estimate.onebit_errors, errors, "rank {rank}");
        assert_eq!(estimate.optimizer, moments + errors, "rank {rank}");
    }
    let plan = neox_trainer::plan::Plan::new(
        &a,
        &neox_trainer::plan::Request {
            files: Vec::new(),
            world_size: ranks,
            device_memory: None,
        },
    )
    .unwrap();
    assert_eq!(plan.memory.optimizer, estimate.optimizer);
    let text = plan.to_text();
    assert!(text.contains("1-bit Adam's compression errors"), "{text}");
}
