//! Megatron's vocab-parallel cross entropy: each rank holds the logits of its
//! part of the vocabulary, and the loss is found from three reductions over
//! the group (the row maxima, the sums of exponentials, the target logits),
//! never gathering the full logits.

use burn::tensor::{FloatDType, Int, Tensor};

use super::mappings::{TpGroup, TpOps};
use crate::dist::comm::ReduceOp;

/// Mean cross entropy of this rank's logits `[b, t, v / tp]` (vocabulary
/// entries `rank * v / tp ..`) against targets `[b, t]` over the whole
/// vocabulary, in f32 (half-precision logits are cast, as the unsplit loss
/// casts them).
pub fn vocab_parallel_cross_entropy<B: TpOps>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    group: &TpGroup,
) -> Tensor<B, 1> {
    if group.size() == 1 {
        return crate::model::cross_entropy(logits, targets);
    }
    let [b, t, v] = logits.dims();
    let logits = logits.cast(FloatDType::F32).reshape([b * t, v]);
    // The maxima only shift the logits for stability: a constant to autodiff.
    let max = group.all_reduce(logits.clone().detach().max_dim(1), ReduceOp::Max);
    let shifted = logits - max;
    let sum_exp = B::reduce_from_tp(shifted.clone().exp().sum_dim(1), group);
    let start = (group.rank() * v) as i64;
    let targets = targets.reshape([b * t, 1]);
    let outside = targets
        .clone()
        .lower_elem(start)
        .bool_or(targets.clone().greater_equal_elem(start + v as i64));
    let local = (targets - start).mask_fill(outside.clone(), 0);
    let target_logit = shifted.gather(1, local).mask_fill(outside, 0.0);
    let target_logit = B::reduce_from_tp(target_logit, group);
    (sum_exp.log() - target_logit).mean()
}
