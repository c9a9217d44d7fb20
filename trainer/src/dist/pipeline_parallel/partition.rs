//! Which layers each pipeline stage holds, as GPT-NeoX asks DeepSpeed to cut
//! them (`pipe_partition_method`).
//!
//! GPT-NeoX's pipeline is a list of `L + 5` items: the embedding, a
//! `_pre_transformer_block` function, the `L` transformer layers, a
//! `_post_transformer_block` function, the final norm and the output layer.
//! DeepSpeed gives every item a weight and cuts the list into contiguous
//! stages: `uniform` weighs every item 1 (its own `partition_uniform`);
//! `type:REGEX` weighs 1 the items whose (class or function) name matches
//! the regex, case-insensitively, 0 the others; `parameters` weighs each by
//! its (tensor-parallel share's) parameter count; both of the latter through
//! `partition_balanced`, a dynamic program minimising the spread between
//! the heaviest and lightest stage.

use std::ops::Range;

use thiserror::Error;

/// `pipe_partition_method`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionMethod {
    Uniform,
    Parameters,
    /// `type:` followed by alternatives of name fragments, `|`-separated
    /// (GPT-NeoX's default is `type:transformer|mlp`).
    Type(Vec<String>),
}

#[derive(Debug, Error, PartialEq)]
pub enum PartitionError {
    #[error(
        "pipe_partition_method `{0}`: expected `uniform`, `parameters` or `type:NAME[|NAME...]`"
    )]
    Unknown(String),
}

impl PartitionMethod {
    /// GPT-NeoX's default, `type:transformer|mlp`.
    pub fn gpt_neox_default() -> Self {
        PartitionMethod::Type(vec!["transformer".into(), "mlp".into()])
    }

    /// Reads a `pipe_partition_method` value. `type:` takes plain names
    /// joined by `|` (DeepSpeed takes a regex; the names GPT-NeoX's configs
    /// use are plain).
    pub fn parse(text: &str) -> Result<Self, PartitionError> {
        let lower = text.trim().to_lowercase();
        match lower.as_str() {
            "uniform" => Ok(PartitionMethod::Uniform),
            "parameters" => Ok(PartitionMethod::Parameters),
            _ => match lower.strip_prefix("type:") {
                Some(names)
                    if !names.is_empty()
                        && names.split('|').all(|n| {
                            !n.is_empty() && n.chars().all(|c| c.is_alphanumeric() || c == '_')
                        }) =>
                {
                    Ok(PartitionMethod::Type(
                        names.split('|').map(str::to_string).collect(),
                    ))
                }
                _ => Err(PartitionError::Unknown(text.to_string())),
            },
        }
    }
}

/// The class or function names of GPT-NeoX's pipeline items for `layers` transformer layers.
pub fn item_names(layers: usize) -> Vec<&'static str> {
    let mut names = vec!["EmbeddingPipe", "_pre_transformer_block"];
    names.extend(std::iter::repeat_n("ParallelTransformerLayerPipe", layers));
    names.extend(["_post_transformer_block", "NormPipe", "ParallelLinearPipe"]);
    names
}

/// DeepSpeed's `partition_uniform`: stage boundaries `[0, .., items]`.
pub fn partition_uniform(items: usize, parts: usize) -> Vec<usize> {
    if items <= parts {
        return (0..=parts).map(|p| p.min(items)).collect();
    }
    let chunk = items / parts;
    let residual = items - chunk * parts;
    // The first `residual` stages take one item more.
    (0..=parts).map(|p| p * chunk + p.min(residual)).collect()
}

/// DeepSpeed's `partition_balanced` (the linear partition problem by
/// dynamic programming, ties going to the later cut): boundaries `[0, .., n]`.
pub fn partition_balanced(weights: &[f64], parts: usize) -> Vec<usize> {
    let (n, m) = (weights.len(), parts);
    if n <= m {
        return partition_uniform(n, m);
    }
    let mut prefix = vec![0.0; n + 1];
    for (i, w) in weights.iter().enumerate() {
        prefix[i + 1] = prefix[i] + w;
    }
    let inf = f64::INFINITY;
    let mut max = vec![vec![inf; m + 1]; n + 1];
    let mut min = vec![vec![inf; m + 1]; n + 1];
    let mut cost = vec![vec![inf; m + 1]; n + 1];
    let mut position = vec![vec![0usize; m + 1]; n + 1];
    max[0][0] = 0.0;
    cost[0][0] = 0.0;
    for i in 1..=n {
        for j in 1..=i.min(m) {
            for k in 0..i {
                let part = prefix[i] - prefix[k];
                let hi = max[k][j - 1].max(part);
                let lo = min[k][j - 1].min(part);
                let c = hi - lo;
                if cost[i][j] >= c {
                    cost[i][j] = c;
                    max[i][j] = hi;
                    min[i][j] = lo;
                    position[i][j] = k;
                }
            }
        }
    }
    let mut bounds = vec![n];
    for j in (1..=m).rev() {
        let last = bounds[bounds.len() - 1];
        bounds.push(position[last][j]);
    }
    bounds.reverse();
    bounds
}

/// What one stage holds, in terms of the model's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub index: usize,
    pub count: usize,
    /// Transformer layers `layers.start..layers.end`.
    pub layers: Range<usize>,
    /// The input embedding (the first stage).
    pub embed: bool,
    /// The final norm.
    pub norm: bool,
    /// The output layer and the loss (the last stage).
    pub head: bool,
}

impl Stage {
    /// The one stage of an unsplit pipeline.
    pub fn whole(layers: usize) -> Self {
        Stage {
            index: 0,
            count: 1,
            layers: 0..layers,
            embed: true,
            norm: true,
            head: true,
        }
    }

    pub fn is_first(&self) -> bool {
        self.index == 0
    }

    pub fn is_last(&self) -> bool {
        self.index + 1 == self.count
    }
}

/// The stages of a model of `layers` transformer layers over `stages`
/// stages, from the items' `weights` (see [`item_weights`]).
pub fn stages(layers: usize, bounds: &[usize]) -> Vec<Stage> {
    let count = bounds.len() - 1;
    let clamp = |i: usize| i.saturating_sub(2).min(layers);
    (0..count)
        .map(|s| {
            let (a, b) = (bounds[s], bounds[s + 1]);
            Stage {
                index: s,
                count,
                layers: clamp(a)..clamp(b),
                embed: a == 0,
                norm: a <= layers + 3 && layers + 3 < b,
                head: b == layers + 5,
            }
        })
        .collect()
}

/// Cuts GPT-NeoX's pipeline items into `parts` stages by `method`;
/// `params` gives the parameter counts of the embedding, one transformer
/// layer each, the norm and the output layer, for `parameters`.
pub fn partition(
    method: &PartitionMethod,
    layers: usize,
    parts: usize,
    params: impl Fn(usize) -> usize,
) -> Vec<Stage> {
    let names = item_names(layers);
    let bounds = match method {
        PartitionMethod::Uniform => partition_uniform(names.len(), parts),
        PartitionMethod::Parameters => {
            let weights: Vec<f64> = (0..names.len()).map(|i| params(i) as f64).collect();
            partition_balanced(&weights, parts)
        }
        PartitionMethod::Type(wanted) => {
            let weights: Vec<f64> = names
                .iter()
                .map(|name| {
                    let name = name.to_lowercase();
                    f64::from(u8::from(wanted.iter().any(|w| name.contains(w.as_str()))))
                })
                .collect();
            partition_balanced(&weights, parts)
        }
    };
    stages(layers, &bounds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_matches_deepspeed() {
        // partition_uniform(10, 3) in DeepSpeed: [0, 4, 7, 10].
        assert_eq!(partition_uniform(10, 3), [0, 4, 7, 10]);
        assert_eq!(partition_uniform(2, 4), [0, 1, 2, 2, 2]);
        assert_eq!(partition_uniform(8, 2), [0, 4, 8]);
    }

    #[test]
    fn balanced_matches_deepspeed() {
        // Printed by scripts/fixtures/deepspeed_partition.py (DeepSpeed's functions).
        assert_eq!(partition_balanced(&[1.0, 1.0, 1.0, 1.0], 2), [0, 2, 4]);
        assert_eq!(
            partition_balanced(&[0., 1., 1., 1., 1., 0., 0.], 2),
            [0, 3, 7]
        );
        assert_eq!(
            partition_balanced(&[0., 1., 1., 1., 1., 1., 1., 0., 0.], 3),
            [0, 3, 5, 9]
        );
        assert_eq!(partition_balanced(&[5.0, 1.0, 1.0, 1.0, 5.0], 2), [0, 3, 5]);
    }

    #[test]
    fn transformer_layers_spread_over_stages() {
        let method = PartitionMethod::gpt_neox_default();
        let two = partition(&method, 2, 2, |_| 0);
        assert_eq!(two[0].layers, 0..1);
        assert_eq!(two[1].layers, 1..2);
        assert!(two[0].embed && !two[0].norm && !two[0].head);
        assert!(!two[1].embed && two[1].norm && two[1].head);
        // Four stages over two layers: the pre- and post-block functions
        // count as "transformer" items in DeepSpeed's regex, so the ends get them.
        let four = partition(&method, 2, 4, |_| 0);
        let layers: Vec<_> = four.iter().map(|s| s.layers.clone()).collect();
        assert_eq!(layers, [0..0, 0..1, 1..2, 2..2]);
        assert!(four[3].norm && four[3].head);
        let uniform = partition(&PartitionMethod::Uniform, 4, 3, |_| 0);
        // 9 items: [emb pre L0] [L1 L2 L3] [post norm out].
        let layers: Vec<_> = uniform.iter().map(|s| s.layers.clone()).collect();
        assert_eq!(layers, [0..1, 1..4, 4..4]);
    }

    #[test]
    fn methods_parse_as_gpt_neox_writes_them() {
        assert_eq!(
            PartitionMethod::parse("type:transformer|mlp"),
            Ok(PartitionMethod::gpt_neox_default())
        );
        assert_eq!(
            PartitionMethod::parse("Uniform"),
            Ok(PartitionMethod::Uniform)
        );
        assert!(PartitionMethod::parse("type:").is_err());
        assert!(PartitionMethod::parse("type:trans.*").is_err());
        let err = PartitionMethod::parse("profile").unwrap_err();
        assert!(err.to_string().contains("`profile`"), "{err}");
    }
}
