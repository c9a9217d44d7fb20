//! numpy's legacy `RandomState`, as far as GPT-NeoX's index uses it.
//!
//! GPT-NeoX seeds one `np.random.RandomState(seed)` and shuffles two arrays
//! with it. Reproducing its batches bit for bit needs three pieces of numpy
//! 1.26, rebuilt here from their descriptions:
//!
//! * MT19937 seeded by `init_genrand(seed)` (an integer seed takes this path,
//!   not `init_by_array`), with the standard tempering;
//! * `random_interval(max)`: a uniform integer in `0..=max` by rejection on
//!   `draw & mask`, where `mask` is the smallest all-ones number `>= max`;
//!   the draw is one 32-bit output while `max <= 0xffff_ffff`, else a 64-bit
//!   value made of two outputs, the first one in the high half;
//! * `shuffle` of a 1-d array: Fisher–Yates from the last element down,
//!   swapping element `i` with element `random_interval(i)` for `i = n-1..=1`.

/// Words of MT19937 state.
const N: usize = 624;
/// The MT19937 middle word offset.
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// numpy's legacy `np.random.RandomState(seed)` (MT19937), reduced to the
/// draws GPT-NeoX's sample index makes.
#[derive(Clone)]
pub struct RandomState {
    state: Box<[u32; N]>,
    /// Next word of `state` to temper; `N` means "regenerate first".
    pos: usize,
}

impl RandomState {
    /// `RandomState(seed)` for an integer seed (numpy accepts `0..2**32`).
    pub fn new(seed: u32) -> Self {
        let mut state = Box::new([0u32; N]);
        state[0] = seed;
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        RandomState { state, pos: N }
    }

    /// MT19937 seeded by `init_by_array(key)`, as Python's `random.seed(n)`
    /// seeds it for an integer `n` (its 32-bit words, least significant first;
    /// `[0]` for 0).
    pub fn from_key(key: &[u32]) -> Self {
        let mut rng = RandomState::new(19_650_218);
        let mt = &mut rng.state;
        let key: &[u32] = if key.is_empty() { &[0] } else { key };
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let prev = mt[i - 1] ^ (mt[i - 1] >> 30);
            mt[i] = (mt[i] ^ prev.wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = mt[i - 1] ^ (mt[i - 1] >> 30);
            mt[i] = (mt[i] ^ prev.wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
        }
        mt[0] = UPPER_MASK;
        rng
    }

    /// Refill the state with the next 624 words (the MT19937 "twist").
    fn generate(&mut self) {
        let mt = &mut self.state;
        let mix = |upper: u32, lower: u32, far: u32| {
            let y = (upper & UPPER_MASK) | (lower & LOWER_MASK);
            far ^ (y >> 1) ^ if y & 1 == 1 { MATRIX_A } else { 0 }
        };
        for i in 0..N - M {
            mt[i] = mix(mt[i], mt[i + 1], mt[i + M]);
        }
        for i in N - M..N - 1 {
            mt[i] = mix(mt[i], mt[i + 1], mt[i + M - N]);
        }
        mt[N - 1] = mix(mt[N - 1], mt[0], mt[M - 1]);
        self.pos = 0;
    }

    /// The next 32-bit output of MT19937.
    pub fn next_u32(&mut self) -> u32 {
        if self.pos == N {
            self.generate();
        }
        let mut y = self.state[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// numpy's 64-bit draw for MT19937: the first 32-bit output is the high half.
    pub fn next_u64(&mut self) -> u64 {
        let high = u64::from(self.next_u32());
        (high << 32) | u64::from(self.next_u32())
    }

    /// A uniform integer in `0..=max`, exactly as numpy's `random_interval`.
    pub fn random_interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        // The smallest all-ones mask covering `max`.
        let mask = u64::MAX >> max.leading_zeros();
        if max <= u64::from(u32::MAX) {
            loop {
                let value = u64::from(self.next_u32()) & mask;
                if value <= max {
                    return value;
                }
            }
        }
        loop {
            let value = self.next_u64() & mask;
            if value <= max {
                return value;
            }
        }
    }

    /// Shuffle in place as `RandomState.shuffle` does a 1-d numpy array.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.random_interval(i as u64) as usize;
            items.swap(i, j);
        }
    }
}

impl std::fmt::Debug for RandomState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RandomState")
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Facts from ../shared/fixtures/neox-reference/README.md (numpy 1.26).
    #[test]
    fn first_outputs_of_seed_1234_are_numpy_s() {
        let mut rng = RandomState::new(1234);
        let first: Vec<u32> = (0..3).map(|_| rng.next_u32()).collect();
        assert_eq!(first, [822_569_775, 2_137_449_171, 2_671_936_806]);
    }

    #[test]
    fn shuffle_of_arange_10_seed_1234_is_numpy_s() {
        let mut values: Vec<i32> = (0..10).collect();
        RandomState::new(1234).shuffle(&mut values);
        assert_eq!(values, [7, 2, 9, 1, 0, 8, 4, 5, 6, 3]);
    }

    // numpy 1.26.4: `RandomState(1234).randint(0, 2**40, size=3)` is
    // [204000912083, 166721346613, 878802328948]; legacy `randint` draws a
    // bound above 2**32 by the same masked 64-bit rejection as `random_interval`.
    #[test]
    fn sixty_four_bit_draws_take_the_high_half_first() {
        let mut rng = RandomState::new(1234);
        let drawn: Vec<u64> = (0..3).map(|_| rng.random_interval((1 << 40) - 1)).collect();
        assert_eq!(drawn, [204_000_912_083, 166_721_346_613, 878_802_328_948]);
    }

    #[test]
    fn the_64_bit_path_starts_just_above_u32_max() {
        // max = 2**32 - 1 draws one 32-bit word; max = 2**32 draws two.
        let mut a = RandomState::new(7);
        let mut b = RandomState::new(7);
        assert_eq!(
            a.random_interval(u64::from(u32::MAX)),
            u64::from(b.next_u32())
        );
        let mut a = RandomState::new(7);
        let mut b = RandomState::new(7);
        let value = a.random_interval(1 << 32);
        let mut expected = b.next_u64() & ((1 << 33) - 1);
        while expected > 1 << 32 {
            expected = b.next_u64() & ((1 << 33) - 1);
        }
        assert_eq!(value, expected);
        assert_eq!(a.next_u32(), b.next_u32(), "both consumed the same words");
    }

    #[test]
    fn random_interval_zero_consumes_nothing() {
        let mut a = RandomState::new(99);
        let mut b = RandomState::new(99);
        assert_eq!(a.random_interval(0), 0);
        assert_eq!(a.next_u32(), b.next_u32());
    }

    #[test]
    fn rejection_stays_in_bounds() {
        let mut rng = RandomState::new(5);
        for max in [1u64, 2, 3, 5, 6, 7, 100, 1000, (1 << 31) + 1] {
            for _ in 0..200 {
                assert!(rng.random_interval(max) <= max);
            }
        }
    }

    // CPython 3.11: `random.seed(n); [random.getrandbits(32) for _ in ...]`.
    #[test]
    fn python_seeding_by_array_matches_cpython() {
        let draws = |key: &[u32], n: usize| {
            let mut rng = RandomState::from_key(key);
            (0..n).map(|_| rng.next_u32()).collect::<Vec<_>>()
        };
        assert_eq!(
            draws(&[1234], 3),
            [4_150_886_329, 3_342_196_574, 1_892_932_127]
        );
        // 2**40 + 5: two words, low first.
        assert_eq!(draws(&[5, 256], 2), [2_166_296_868, 2_220_160_828]);
        assert_eq!(draws(&[0], 2), [3_626_764_237, 1_654_615_998]);
    }

    #[test]
    fn state_regenerates_after_624_words() {
        // MT19937's reference: the 10,000th output for init_genrand(5489).
        let mut rng = RandomState::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = rng.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }
}
