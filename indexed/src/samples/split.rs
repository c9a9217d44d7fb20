//! Train / valid / test document ranges from a `"969,30,1"`-style string
//! (`get_train_valid_test_split_` in GPT-NeoX's `data_utils.py`).

use std::ops::Range;

use super::error::SampleError;

/// The three document ranges of a split: train, valid, test (any may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Boundaries `[0, a, b, size]`: train is `0..a`, valid `a..b`, test `b..size`.
    pub boundaries: [usize; 4],
}

impl Split {
    /// Split `size` documents by `weights` as GPT-NeoX does.
    ///
    /// The string holds up to three weights separated by `,` (or `/`); missing
    /// ones are 0 and extra ones are ignored. Weights are normalised, each
    /// range gets `round(weight * size)` documents (Python's round: halves to
    /// even), and any excess or shortfall is subtracted from every boundary
    /// after the first so that the last one is `size`.
    pub fn parse(weights: &str, size: usize) -> Result<Split, SampleError> {
        let bad = |why: String| SampleError::Config(format!("split \"{weights}\": {why}"));
        let separator = if weights.contains(',') {
            ','
        } else if weights.contains('/') {
            '/'
        } else {
            ','
        };
        let mut parts = Vec::new();
        for piece in weights.split(separator) {
            let value: f64 = piece
                .trim()
                .parse()
                .map_err(|_| bad(format!("\"{piece}\" is not a number")))?;
            if !value.is_finite() || value < 0.0 {
                return Err(bad(format!("weight {piece} must be a finite number >= 0")));
            }
            parts.push(value);
        }
        parts.resize(parts.len().max(3), 0.0);
        parts.truncate(3);
        // Python's sum(): left to right from 0.
        let total = parts.iter().fold(0.0, |a, b| a + b);
        if total <= 0.0 {
            return Err(bad("the weights sum to 0".into()));
        }
        let mut boundaries = [0i128; 4];
        for (i, part) in parts.iter().enumerate() {
            let share = (part / total * size as f64).round_ties_even() as i128;
            boundaries[i + 1] = boundaries[i] + share;
        }
        let diff = boundaries[3] - size as i128;
        for b in &mut boundaries[1..] {
            *b -= diff;
        }
        if boundaries.windows(2).any(|w| w[0] > w[1]) {
            return Err(bad(format!(
                "gives decreasing boundaries {boundaries:?} for {size} documents"
            )));
        }
        Ok(Split {
            boundaries: boundaries.map(|b| b as usize),
        })
    }

    /// The documents of split `i` (0 train, 1 valid, 2 test).
    pub fn range(&self, i: usize) -> Range<usize> {
        let i = i.min(2);
        self.boundaries[i]..self.boundaries[i + 1]
    }

    /// The training documents.
    pub fn train(&self) -> Range<usize> {
        self.range(0)
    }

    /// The validation documents.
    pub fn valid(&self) -> Range<usize> {
        self.range(1)
    }

    /// The test documents.
    pub fn test(&self) -> Range<usize> {
        self.range(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_splits() {
        // ../shared/fixtures/neox-reference/README.md: 300 documents.
        assert_eq!(
            Split::parse("969,30,1", 300).unwrap().boundaries,
            [0, 291, 300, 300]
        );
        assert_eq!(
            Split::parse("949,50,1", 300).unwrap().boundaries,
            [0, 285, 300, 300]
        );
    }

    #[test]
    fn rounding_is_python_s_and_the_end_is_size() {
        // 0.5 * 5 = 2.5 rounds to 2 (even) twice: [0, 2, 4, 4], one short,
        // and GPT-NeoX moves every boundary after 0 up by the shortfall.
        assert_eq!(Split::parse("1,1", 5).unwrap().boundaries, [0, 3, 5, 5]);
        // 3 x round(1/3 * 10) = 9: the last boundary is pushed up to 10.
        assert_eq!(Split::parse("1,1,1", 10).unwrap().boundaries, [0, 4, 7, 10]);
        assert_eq!(Split::parse("1/1/2", 8).unwrap().boundaries, [0, 2, 4, 8]);
        assert_eq!(Split::parse("100", 7).unwrap().boundaries, [0, 7, 7, 7]);
        assert_eq!(
            Split::parse(" 98, 2 ,0,5", 100).unwrap().boundaries,
            [0, 98, 100, 100]
        );
        let s = Split::parse("969,30,1", 6046).unwrap();
        assert_eq!(
            (s.train(), s.valid(), s.test()),
            (0..5859, 5859..6040, 6040..6046)
        );
    }

    #[test]
    fn bad_strings_are_refused() {
        for (text, expected) in [
            ("", "is not a number"),
            ("9x,1", "\"9x\" is not a number"),
            ("0,0,0", "sum to 0"),
            ("-1,2", "must be a finite number"),
            ("nan,1", "must be a finite number"),
        ] {
            let err = Split::parse(text, 10).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }
}
