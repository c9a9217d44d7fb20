//! Does each rank fit in the device's memory, and if not, which smallest
//! changes would make it fit: every candidate layout is estimated again by
//! [`memory::per_rank`], never guessed.

use serde::Serialize;

use super::memory::{self, Layout};
use super::params::ParamTensor;
use crate::dist::PartitionMethod;
use crate::model::ModelConfig;

/// Parses a memory size: `80GiB`, `80 GB`, `81920MiB`, `80e9` (bytes), `1.5TiB`.
/// Units are decimal (`kB`, `MB`, `GB`, `TB`) or binary (`KiB` ... `TiB`), case
/// insensitive; a bare number is bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}`: expected a size such as 80GiB, 80GB or 80e9 (bytes)"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}`; expected B, kB, MB, GB, TB, KiB, MiB, GiB or TiB"
            ));
        }
    };
    let bytes = number * scale;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{text}`: expected a size of at least one byte"));
    }
    Ok(bytes.round() as u64)
}

/// What this build can run, for marking suggestions it cannot follow yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Support {
    pub tensor_parallel: bool,
    pub pipeline_parallel: bool,
    pub activation_checkpointing: bool,
    /// The highest ZeRO stage this build has.
    pub max_zero: u8,
}

/// One way to make the ranks fit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suggestion {
    /// The options to set, as they would be written in a config.
    pub changes: Vec<String>,
    pub layout: Layout,
    /// The fullest rank's bytes under the new layout.
    pub per_rank: u64,
    /// GPUs the layout needs.
    pub gpus: usize,
    /// Changes this build cannot run yet.
    pub not_in_this_build: Vec<String>,
}

/// The fit of a layout on a device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fit {
    pub device_memory: u64,
    pub per_rank: u64,
    pub fits: bool,
    /// Empty when it fits.
    pub suggestions: Vec<Suggestion>,
}

/// Checks `layout` against `device_memory` and, when it does not fit, finds
/// the smallest changes that would: first each setting alone at its least
/// change that fits, and when none fits alone, the cheapest combinations.
pub fn check(
    model: &ModelConfig,
    tensors: &[ParamTensor],
    layout: &Layout,
    method: &PartitionMethod,
    device_memory: u64,
    support: &Support,
) -> Fit {
    let per_rank = memory::per_rank_with(model, tensors, layout, method).total;
    let fits = per_rank <= device_memory;
    let suggestions = if fits {
        Vec::new()
    } else {
        suggest(model, tensors, layout, method, device_memory, support)
    };
    Fit {
        device_memory,
        per_rank,
        fits,
        suggestions,
    }
}

/// How much a person changes: fewer GPUs first, then fewer settings, then the
/// milder ones (a ZeRO stage costs communication, checkpointing a third more
/// compute, a smaller micro batch efficiency, tp and pp the layout).
type Cost = (usize, usize, usize, u64);

fn suggest(
    model: &ModelConfig,
    tensors: &[ParamTensor],
    base: &Layout,
    method: &PartitionMethod,
    device_memory: u64,
    support: &Support,
) -> Vec<Suggestion> {
    let mut fitting: Vec<(Cost, Suggestion)> = Vec::new();
    for layout in candidates(model, base) {
        let total = memory::per_rank_with(model, tensors, &layout, method).total;
        if total > device_memory {
            continue;
        }
        let (changes, effort) = describe(base, &layout);
        let cost = (layout.world(), changes.len(), effort, total);
        let not_in_this_build = unsupported(base, &layout, support);
        fitting.push((
            cost,
            Suggestion {
                changes,
                layout,
                per_rank: total,
                gpus: layout.world(),
                not_in_this_build,
            },
        ));
    }
    fitting.sort_by_key(|a| a.0);
    let singles: Vec<Suggestion> = {
        let mut seen: Vec<String> = Vec::new();
        fitting
            .iter()
            .filter(|(c, _)| c.1 == 1)
            .filter(|(_, s)| {
                let knob = s.changes[0]
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let new = !seen.contains(&knob);
                seen.push(knob);
                new
            })
            .map(|(_, s)| s.clone())
            .collect()
    };
    if singles.is_empty() {
        fitting.into_iter().take(3).map(|(_, s)| s).collect()
    } else {
        singles
    }
}

/// Every layout within reach of `base`: checkpointing on, higher ZeRO
/// stages, smaller micro batches (more accumulation, the same global batch),
/// and doubled tp or pp (on the same GPUs when they divide, else more).
fn candidates(model: &ModelConfig, base: &Layout) -> Vec<Layout> {
    let ckpt: Vec<bool> = if base.checkpoint_activations {
        vec![true]
    } else {
        vec![false, true]
    };
    let micro: Vec<usize> = (1..=base.micro_batch)
        .rev()
        .filter(|m| base.micro_batch.is_multiple_of(*m))
        .collect();
    let heads = model.num_attention_heads;
    let tps: Vec<usize> = std::iter::successors(Some(base.tp), |t| Some(t * 2))
        .take_while(|t| *t <= heads.min(64) && heads.is_multiple_of(*t))
        .collect();
    let pps: Vec<usize> = std::iter::successors(Some(base.pp), |p| Some(p * 2))
        .take_while(|p| *p <= model.num_layers.min(64))
        .collect();
    let mut out = Vec::new();
    for &checkpoint_activations in &ckpt {
        for zero in base.zero..=3 {
            for &m in &micro {
                for &tp in &tps {
                    for &pp in &pps {
                        let mut l = regrid(base, pp, tp);
                        l.checkpoint_activations = checkpoint_activations;
                        l.zero = zero;
                        l.grad_accum = l.grad_accum * l.micro_batch / m;
                        l.micro_batch = m;
                        out.push(l);
                    }
                }
            }
        }
    }
    out
}

/// `base` with `pp` stages and `tp` tensor-parallel ranks: on the same GPUs
/// (fewer data-parallel ranks, more accumulation for the same global batch)
/// when they allow it, else with the same data parallelism on more GPUs.
fn regrid(base: &Layout, pp: usize, tp: usize) -> Layout {
    let world = base.world();
    let global = base.global_batch();
    if world.is_multiple_of(pp * tp) {
        let dp = world / (pp * tp);
        if global.is_multiple_of(base.micro_batch * dp) {
            return Layout {
                pp,
                tp,
                dp,
                grad_accum: global / (base.micro_batch * dp),
                ..*base
            };
        }
    }
    Layout { pp, tp, ..*base }
}

/// The option changes from `base` to `l`, and how much effort they are.
fn describe(base: &Layout, l: &Layout) -> (Vec<String>, usize) {
    let mut changes = Vec::new();
    let mut effort = 0;
    if l.zero != base.zero {
        changes.push(format!("zero_optimization.stage: {}", l.zero));
        effort += (l.zero - base.zero) as usize;
    }
    if l.checkpoint_activations != base.checkpoint_activations {
        changes.push("checkpoint_activations: true".to_string());
        effort += 2;
    }
    if l.micro_batch != base.micro_batch {
        changes.push(format!(
            "train_micro_batch_size_per_gpu: {} (gradient_accumulation_steps: {})",
            l.micro_batch, l.grad_accum
        ));
        effort += 3 * (base.micro_batch / l.micro_batch).ilog2() as usize;
    }
    for (key, old, new) in [
        ("model_parallel_size", base.tp, l.tp),
        ("pipe_parallel_size", base.pp, l.pp),
    ] {
        if new != old {
            changes.push(format!("{key}: {new}"));
            effort += 4 * (new / old).ilog2() as usize;
        }
    }
    (changes, effort)
}

fn unsupported(base: &Layout, l: &Layout, support: &Support) -> Vec<String> {
    let mut out = Vec::new();
    if l.tp > 1 && l.tp != base.tp && !support.tensor_parallel {
        out.push("tensor parallelism".to_string());
    }
    if l.pp > 1 && l.pp != base.pp && !support.pipeline_parallel {
        out.push("pipeline parallelism".to_string());
    }
    if l.checkpoint_activations && !base.checkpoint_activations && !support.activation_checkpointing
    {
        out.push("activation checkpointing".to_string());
    }
    if l.zero > support.max_zero {
        out.push(format!("ZeRO stage {}", l.zero));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::memory::{Keeper, Precision};
    use crate::plan::params::tensors;

    #[test]
    fn sizes_parse_in_decimal_and_binary_units() {
        assert_eq!(parse_size("80GiB"), Ok(80 << 30));
        assert_eq!(parse_size("80 GB"), Ok(80_000_000_000));
        assert_eq!(parse_size("80e9"), Ok(80_000_000_000));
        assert_eq!(parse_size("81920mib"), Ok(80 << 30));
        assert_eq!(parse_size("1.5TiB"), Ok(3 << 39));
        assert_eq!(parse_size("512"), Ok(512));
        for bad in ["", "GiB", "80G", "80 gigs", "-1GB", "0", "nan", "1e400"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("80G").unwrap_err().contains("GiB"));
    }

    fn model() -> ModelConfig {
        let mut m = crate::plan::memory::tests::model(8, 512, 8, 1024, 1024);
        m.num_attention_heads = 8;
        m
    }

    fn base() -> Layout {
        Layout {
            pp: 1,
            dp: 1,
            tp: 1,
            zero: 0,
            offload: false,
            onebit: false,
            precision: Precision::Fp16,
            keeper: Keeper::DeepSpeed,
            checkpoint_activations: false,
            checkpoint_num_layers: 1,
            partition_activations: false,
            micro_batch: 8,
            grad_accum: 1,
        }
    }

    fn cut() -> PartitionMethod {
        PartitionMethod::gpt_neox_default()
    }

    const ALL: Support = Support {
        tensor_parallel: true,
        pipeline_parallel: true,
        activation_checkpointing: true,
        max_zero: 3,
    };

    #[test]
    fn a_layout_that_fits_needs_no_suggestion() {
        let (m, l) = (model(), base());
        let t = tensors(&m);
        let need = memory::per_rank(&m, &t, &l).total;
        let fit = check(&m, &t, &l, &cut(), need, &ALL);
        assert!(fit.fits && fit.suggestions.is_empty());
        assert!(!check(&m, &t, &l, &cut(), need - 1, &ALL).fits);
    }

    #[test]
    fn suggestions_fit_when_estimated_again_and_prefer_the_smallest_change() {
        let (m, l) = (model(), base());
        let t = tensors(&m);
        let full = memory::per_rank(&m, &t, &l);
        let ckpt = memory::per_rank(
            &m,
            &t,
            &Layout {
                checkpoint_activations: true,
                ..l
            },
        );
        assert!(ckpt.total < full.total);
        // Room for checkpointing's total, not for the full activations.
        let fit = check(&m, &t, &l, &cut(), ckpt.total, &ALL);
        assert!(!fit.fits);
        let first = &fit.suggestions[0];
        assert_eq!(first.changes, ["checkpoint_activations: true"]);
        assert_eq!(first.per_rank, ckpt.total);
        assert_eq!(first.gpus, 1);
        for s in &fit.suggestions {
            assert!(s.per_rank <= ckpt.total, "{s:?}");
            assert_eq!(memory::per_rank(&m, &t, &s.layout).total, s.per_rank);
            assert_eq!(s.layout.global_batch(), l.global_batch(), "{s:?}");
            assert_eq!(s.changes.len(), 1, "{s:?}");
        }
        // A smaller micro batch is the other single change that fits on one GPU.
        assert!(
            fit.suggestions
                .iter()
                .any(|s| s.changes[0].starts_with("train_micro_batch_size_per_gpu")),
            "{:?}",
            fit.suggestions
        );
    }

    #[test]
    fn when_nothing_fits_alone_combinations_are_offered_and_marked() {
        let (m, l) = (model(), base());
        let t = tensors(&m);
        // The weights alone (16 bytes a parameter) leave no room on one GPU.
        let all: u64 = t.iter().map(ParamTensor::numel).sum();
        let fit = check(
            &m,
            &t,
            &l,
            &cut(),
            16 * all / 3,
            &Support {
                tensor_parallel: false,
                pipeline_parallel: false,
                activation_checkpointing: false,
                max_zero: 2,
            },
        );
        assert!(!fit.fits);
        assert!(!fit.suggestions.is_empty());
        for s in &fit.suggestions {
            assert!(s.gpus > 1, "{s:?}");
            assert!(s.per_rank <= 16 * all / 3);
            assert!(!s.not_in_this_build.is_empty(), "{s:?}");
        }
        // Nothing at all fits in one byte.
        assert!(check(&m, &t, &l, &cut(), 1, &ALL).suggestions.is_empty());
    }
}
