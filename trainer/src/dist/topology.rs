//! GPT-NeoX's grid of ranks: `pipe_parallel_size` x data x `model_parallel_size`,
//! pipe outermost, model innermost: global rank = `(pp * dp_size + dp) * tp_size + tp`.

/// The sizes of the three parallel dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    pub pp: usize,
    pub dp: usize,
    pub tp: usize,
}

/// One rank's coordinates in a [`Topology`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coord {
    pub pp: usize,
    pub dp: usize,
    pub tp: usize,
}

impl Topology {
    /// The grid for `world` ranks with the given pipe and model sizes; the data
    /// size is what remains. `None` when they do not divide `world`.
    pub fn new(world: usize, pp: usize, tp: usize) -> Option<Self> {
        if pp == 0 || tp == 0 || world == 0 || !world.is_multiple_of(pp * tp) {
            return None;
        }
        Some(Topology {
            pp,
            dp: world / (pp * tp),
            tp,
        })
    }

    pub fn world(&self) -> usize {
        self.pp * self.dp * self.tp
    }

    pub fn rank(&self, c: Coord) -> usize {
        (c.pp * self.dp + c.dp) * self.tp + c.tp
    }

    pub fn coord(&self, rank: usize) -> Coord {
        Coord {
            pp: rank / (self.dp * self.tp),
            dp: rank / self.tp % self.dp,
            tp: rank % self.tp,
        }
    }

    /// The ranks that share `rank`'s pipe and model coordinates (its data-parallel group).
    pub fn dp_group(&self, rank: usize) -> Vec<usize> {
        let c = self.coord(rank);
        (0..self.dp)
            .map(|dp| self.rank(Coord { dp, ..c }))
            .collect()
    }

    /// The ranks that share `rank`'s pipe and data coordinates (its tensor-parallel group).
    pub fn tp_group(&self, rank: usize) -> Vec<usize> {
        let c = self.coord(rank);
        (0..self.tp)
            .map(|tp| self.rank(Coord { tp, ..c }))
            .collect()
    }

    /// The ranks that share `rank`'s data and model coordinates (its pipeline).
    pub fn pp_group(&self, rank: usize) -> Vec<usize> {
        let c = self.coord(rank);
        (0..self.pp)
            .map(|pp| self.rank(Coord { pp, ..c }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_are_pipe_major_model_minor() {
        let t = Topology::new(8, 2, 2).unwrap();
        assert_eq!(t.dp, 2);
        assert_eq!(
            t.rank(Coord {
                pp: 1,
                dp: 0,
                tp: 1
            }),
            5
        );
        for r in 0..8 {
            assert_eq!(t.rank(t.coord(r)), r);
        }
        assert_eq!(t.dp_group(5), [5, 7]);
        assert_eq!(t.tp_group(5), [4, 5]);
        assert_eq!(t.pp_group(5), [1, 5]);
        assert!(Topology::new(6, 4, 1).is_none());
    }
}
