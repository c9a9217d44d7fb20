//! ZeRO (DeepSpeed's `zero_optimization.stage`) over the data-parallel ranks.
//!
//! The parameters, in the model's visiting order, are cut into `dp`
//! contiguous ranges of about equal size, cut at parameter boundaries; rank r
//! owns range r. Stage 1: every rank gets all gradients (all-reduce) but
//! steps, and keeps optimizer state for, only the parameters it owns. Stage 2:
//! gradients are reduce-scattered, so a rank receives the sums of its own
//! parameters' gradients only. After the step the owners' new values are
//! all-gathered: ranges in rank order concatenate to all parameters in order.
//!
//! Burn's optimizer leaves a parameter without a gradient untouched and makes
//! no state for it, so stepping only owned parameters needs no change to it.
//! Each owned parameter's update is the one plain data parallelism makes,
//! so ZeRO equals DP bit for bit.

use std::collections::HashSet;
use std::ops::Range;

use burn::module::ParamId;

/// `zero_optimization.stage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroStage {
    /// Plain data parallelism: state and gradients replicated.
    #[default]
    Off,
    /// Optimizer state partitioned.
    One,
    /// Optimizer state and gradients partitioned.
    Two,
}

impl ZeroStage {
    /// The stage for GPT-NeoX's `zero_optimization.stage` (3 is not supported).
    pub fn from_stage(stage: u64) -> Option<Self> {
        match stage {
            0 => Some(ZeroStage::Off),
            1 => Some(ZeroStage::One),
            2 => Some(ZeroStage::Two),
            _ => None,
        }
    }

    pub fn number(self) -> u64 {
        match self {
            ZeroStage::Off => 0,
            ZeroStage::One => 1,
            ZeroStage::Two => 2,
        }
    }
}

/// Which rank owns which parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    /// Parameter index ranges, one per rank.
    pub params: Vec<Range<usize>>,
    /// Element ranges in the flat buffer of all parameters, one per rank.
    pub elems: Vec<Range<usize>>,
}

impl Partition {
    /// Cuts parameters of `sizes` elements (in order) among `ranks` ranks: rank r's
    /// range ends at the first parameter boundary at or past `(r + 1) / ranks`
    /// of all elements (a rank may own none when one parameter dominates).
    pub fn new(sizes: &[usize], ranks: usize) -> Self {
        let total: usize = sizes.iter().sum();
        let mut params = Vec::with_capacity(ranks);
        let mut elems = Vec::with_capacity(ranks);
        let (mut p, mut e) = (0, 0);
        for r in 0..ranks {
            let target = if r + 1 == ranks {
                total
            } else {
                (total as u128 * (r as u128 + 1) / ranks as u128) as usize
            };
            let (p0, e0) = (p, e);
            while p < sizes.len() && (e < target || r + 1 == ranks) {
                e += sizes[p];
                p += 1;
            }
            params.push(p0..p);
            elems.push(e0..e);
        }
        Partition { params, elems }
    }

    /// Elements each rank owns, in rank order.
    pub fn counts(&self) -> Vec<usize> {
        self.elems.iter().map(|r| r.len()).collect()
    }

    /// The rank owning parameter `index`.
    pub fn owner(&self, index: usize) -> usize {
        self.params
            .iter()
            .position(|r| r.contains(&index))
            .unwrap_or(0)
    }

    /// The ids of the parameters `rank` owns, given all ids in order.
    pub fn owned_ids(&self, ids: &[ParamId], rank: usize) -> HashSet<ParamId> {
        ids[self.params[rank].clone()].iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_everything_once_at_parameter_boundaries() {
        let sizes = [10, 3, 3, 20, 1, 1, 6];
        for ranks in 1..=9 {
            let p = Partition::new(&sizes, ranks);
            assert_eq!(p.params.len(), ranks);
            assert_eq!(p.params.first().unwrap().start, 0);
            assert_eq!(p.params.last().unwrap().end, sizes.len());
            for w in p.params.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
            assert_eq!(p.counts().iter().sum::<usize>(), 44);
            for (r, range) in p.params.iter().enumerate() {
                let n: usize = sizes[range.clone()].iter().sum();
                assert_eq!(n, p.elems[r].len());
                for i in range.clone() {
                    assert_eq!(p.owner(i), r);
                }
            }
        }
        let even = Partition::new(&[4, 4, 4, 4], 2);
        assert_eq!(even.params, [0..2, 2..4]);
    }

    #[test]
    fn stages_map_from_config_numbers() {
        assert_eq!(ZeroStage::from_stage(2), Some(ZeroStage::Two));
        assert_eq!(ZeroStage::from_stage(3), None);
    }
}
