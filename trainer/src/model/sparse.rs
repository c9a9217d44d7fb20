//! GPT-NeoX's per-layer attention kinds (`attention_config`) and DeepSpeed's
//! block-sparse layouts (`sparsity_config`), built as DeepSpeed's
//! `SparsityConfig.make_layout` builds them for GPT-NeoX's unidirectional
//! attention (`deepspeed/ops/sparse_attention/sparsity_config.py`, with the
//! defaults of GPT-NeoX's `configure_sparse_attention`).
//!
//! A sparse layer here is dense attention with the layout as a mask: a key
//! is visible when it is causal (and inside any sliding window) and its block
//! is set in the head's layout. That costs what global attention costs (all
//! `t x t` scores are computed, then masked) plus a `[heads, t, t]` mask per
//! sparse layer and forward pass, built on the host from the block layout.
//! As in GPT-NeoX, a sparse layer adds no ALiBi bias and drops out its
//! context (DeepSpeed's kernels have no attention dropout).
//!
//! Random blocks (`sparse_variable`'s `num_random_blocks`, `bigbird`'s) are
//! drawn as Python's `random.sample` draws them after `random.seed(seed)`,
//! layer after layer: the layouts GPT-NeoX builds when nothing else draws from
//! Python's `random` between its seeding and the model's construction.

use burn::tensor::{Bool, Tensor, TensorData, backend::Backend};
use neox_indexed::samples::RandomState;
use serde::{Deserialize, Serialize};

/// One layer's attention in `attention_config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionKind {
    Global,
    /// Flash attention: the same function as `global`.
    Flash,
    Local,
    SparseFixed,
    SparseVariable,
    Bigbird,
    Bslongformer,
}

impl AttentionKind {
    /// GPT-NeoX's names of the kinds implemented here.
    pub const NAMES: &'static [&'static str] = &[
        "global",
        "flash",
        "local",
        "sparse_fixed",
        "sparse_variable",
        "bigbird",
        "bslongformer",
    ];

    pub fn from_neox(name: &str) -> Option<Self> {
        Some(match name {
            "global" => AttentionKind::Global,
            "flash" => AttentionKind::Flash,
            "local" => AttentionKind::Local,
            "sparse_fixed" => AttentionKind::SparseFixed,
            "sparse_variable" => AttentionKind::SparseVariable,
            "bigbird" => AttentionKind::Bigbird,
            "bslongformer" => AttentionKind::Bslongformer,
            _ => return None,
        })
    }

    pub fn is_sparse(self) -> bool {
        !matches!(self, AttentionKind::Global | AttentionKind::Flash)
    }
}

/// GPT-NeoX's `sparsity_config`: fields left out take the defaults GPT-NeoX
/// gives each kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparsityConfig {
    pub block: Option<usize>,
    pub different_layout_per_head: Option<bool>,
    pub num_local_blocks: Option<usize>,
    pub num_global_blocks: Option<usize>,
    pub num_different_global_patterns: Option<usize>,
    pub num_random_blocks: Option<usize>,
    pub local_window_blocks: Option<Vec<usize>>,
    pub global_block_indices: Option<Vec<usize>>,
    pub global_block_end_indices: Option<Vec<usize>>,
    pub num_sliding_window_blocks: Option<usize>,
    /// Python's `random.seed` before the layouts are drawn (GPT-NeoX's `seed`).
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_seed() -> u64 {
    1234
}

impl SparsityConfig {
    pub fn block(&self) -> usize {
        self.block.unwrap_or(16)
    }
}

/// Python's `random` module as far as DeepSpeed's layouts use it.
pub struct PyRandom(RandomState);

impl PyRandom {
    /// `random.seed(seed)` for a non-negative integer.
    pub fn new(seed: u64) -> Self {
        let key: Vec<u32> = if seed >> 32 == 0 {
            vec![seed as u32]
        } else {
            vec![seed as u32, (seed >> 32) as u32]
        };
        PyRandom(RandomState::from_key(&key))
    }

    /// `_randbelow(n)` for `0 < n < 2**32`: rejection on `getrandbits(n.bit_length())`.
    fn below(&mut self, n: usize) -> usize {
        let k = usize::BITS - n.leading_zeros();
        loop {
            let r = (self.0.next_u32() >> (32 - k)) as usize;
            if r < n {
                return r;
            }
        }
    }

    /// `random.sample(range(n), k)`.
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut setsize = 21;
        if k > 5 {
            // 4 ** ceil(log(3k, 4)), as CPython computes it (in floating point).
            setsize += 4usize.pow(((3 * k) as f64).log(4.0).ceil() as u32);
        }
        if n <= setsize {
            let mut pool: Vec<usize> = (0..n).collect();
            (0..k)
                .map(|i| {
                    let j = self.below(n - i);
                    let picked = pool[j];
                    pool[j] = pool[n - i - 1];
                    picked
                })
                .collect()
        } else {
            let mut selected = std::collections::HashSet::new();
            (0..k)
                .map(|_| {
                    let mut j = self.below(n);
                    while selected.contains(&j) {
                        j = self.below(n);
                    }
                    selected.insert(j);
                    j
                })
                .collect()
        }
    }
}

/// Which blocks each head attends to: `[heads, blocks, blocks]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockLayout {
    pub heads: usize,
    pub blocks: usize,
    pub block: usize,
    cells: Vec<bool>,
}

impl BlockLayout {
    fn zeros(heads: usize, blocks: usize, block: usize) -> Self {
        BlockLayout {
            heads,
            blocks,
            block,
            cells: vec![false; heads * blocks * blocks],
        }
    }

    pub fn get(&self, h: usize, row: usize, col: usize) -> bool {
        self.cells[(h * self.blocks + row) * self.blocks + col]
    }

    fn set(&mut self, h: usize, row: usize, col: usize) {
        self.cells[(h * self.blocks + row) * self.blocks + col] = true;
    }

    /// Sets columns `cols` of rows `rows` of head `h`.
    fn fill(&mut self, h: usize, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) {
        for r in rows {
            for c in cols.clone() {
                self.set(h, r, c);
            }
        }
    }

    /// Clears everything above the diagonal (`torch.tril`) of every head.
    fn tril(&mut self) {
        for h in 0..self.heads {
            for r in 0..self.blocks {
                for c in r + 1..self.blocks {
                    self.cells[(h * self.blocks + r) * self.blocks + c] = false;
                }
            }
        }
    }

    /// `different_layout_per_head: false`: every head takes head 0's layout.
    fn propagate_first_head(&mut self) {
        let n = self.blocks * self.blocks;
        let (first, rest) = self.cells.split_at_mut(n);
        for head in rest.chunks_mut(n) {
            head.copy_from_slice(first);
        }
    }

    /// Heads `first..first + n` of the layout (a tensor-parallel rank's).
    pub fn select_heads(&self, first: usize, n: usize) -> BlockLayout {
        let per_head = self.blocks * self.blocks;
        BlockLayout {
            heads: n,
            cells: self.cells[first * per_head..(first + n) * per_head].to_vec(),
            ..*self
        }
    }

    /// The layout as 0/1 rows, head after head (for comparisons and messages).
    pub fn to_bits(&self) -> Vec<u8> {
        self.cells.iter().map(|&c| u8::from(c)).collect()
    }

    /// `[heads, t, t]`, true where the layout hides key `j` from query `i`
    /// (their blocks are not set). Tokens beyond the layout's `seq_length`
    /// (which GPT-NeoX cannot run) are not hidden: they attend densely.
    pub fn forbidden<B: Backend>(&self, t: usize, device: &B::Device) -> Tensor<B, 3, Bool> {
        let b = self.block;
        let mut hidden = Vec::with_capacity(self.heads * t * t);
        for h in 0..self.heads {
            for i in 0..t {
                for j in 0..t {
                    let (r, c) = (i / b, j / b);
                    hidden.push(r < self.blocks && c < self.blocks && !self.get(h, r, c));
                }
            }
        }
        Tensor::from_data(TensorData::new(hidden, [self.heads, t, t]), device)
    }
}

/// DeepSpeed's layout of `kind` for `heads` heads over `seq_len` tokens, with
/// GPT-NeoX's defaults; random blocks come from `rng`. Errors are DeepSpeed's.
pub fn make_layout(
    kind: AttentionKind,
    config: &SparsityConfig,
    heads: usize,
    seq_len: usize,
    rng: &mut PyRandom,
) -> Result<BlockLayout, String> {
    let block = config.block();
    if block == 0 || !seq_len.is_multiple_of(block) {
        return Err(format!(
            "sequence length {seq_len} is not a multiple of the block size {block}"
        ));
    }
    let n = seq_len / block;
    let mut layout = BlockLayout::zeros(heads, n, block);
    let per_head = config.different_layout_per_head.unwrap_or(false);
    let layout_heads = if per_head { heads } else { 1 };
    let global_windows = || -> Result<Vec<(usize, usize)>, String> {
        let starts = config.global_block_indices.clone().unwrap_or(vec![0]);
        match &config.global_block_end_indices {
            None => Ok(starts.iter().map(|&s| (s, s + 1)).collect()),
            Some(ends) if ends.len() != starts.len() => Err(format!(
                "global_block_indices has {} entries but global_block_end_indices {}",
                starts.len(),
                ends.len()
            )),
            Some(ends) => starts
                .iter()
                .zip(ends)
                .map(|(&s, &e)| {
                    if s < e {
                        Ok((s, e))
                    } else {
                        Err(format!("global block start {s} is not below its end {e}"))
                    }
                })
                .collect(),
        }
    };
    match kind {
        AttentionKind::Global | AttentionKind::Flash => {
            return Err("global attention has no block layout".into());
        }
        AttentionKind::SparseFixed => {
            let local = config.num_local_blocks.unwrap_or(4);
            let global = config.num_global_blocks.unwrap_or(1);
            let patterns = config.num_different_global_patterns.unwrap_or(1);
            if local == 0 || global == 0 || !local.is_multiple_of(global) {
                return Err(format!(
                    "num_local_blocks {local} must be a multiple of num_global_blocks {global}"
                ));
            }
            if patterns > 1 && !per_head {
                return Err(
                    "num_different_global_patterns above 1 needs different_layout_per_head".into(),
                );
            }
            if n < global {
                return Err(format!(
                    "num_global_blocks {global} exceeds the {n} blocks of a row"
                ));
            }
            if patterns == 0 || patterns > local / global {
                return Err(format!(
                    "num_different_global_patterns {patterns} must be in 1..={}",
                    local / global
                ));
            }
            for h in 0..layout_heads {
                // Local windows, lower triangle of each.
                for start in (0..n).step_by(local) {
                    let end = (start + local).min(n);
                    for row in start..end {
                        layout.fill(h, row..row + 1, start..row + 1);
                    }
                }
                // Global columns: block(s) of each window, from its row down.
                let first = local - (1 + h % patterns) * global;
                let end = n - n % local;
                for i in (first..end).step_by(local) {
                    layout.fill(h, i..n, i..i + global);
                }
                if end < n {
                    let start = (end + first).min(n - global);
                    layout.fill(h, start..n, start..start + global);
                }
            }
        }
        AttentionKind::SparseVariable => {
            let random = config.num_random_blocks.unwrap_or(0);
            let windows = config.local_window_blocks.clone().unwrap_or(vec![4]);
            let globals = global_windows()?;
            if n < random {
                return Err(format!(
                    "num_random_blocks {random} exceeds the {n} blocks of a row"
                ));
            }
            if windows.is_empty() || windows.contains(&0) {
                return Err("local_window_blocks must be sizes above 0".into());
            }
            for h in 0..layout_heads {
                for row in 0..n {
                    for col in rng.sample(n, random) {
                        layout.set(h, row, col);
                    }
                }
                let (mut start, mut end) = (0, 0);
                for &size in &windows {
                    end = (end + size).min(n);
                    for row in start..end {
                        layout.fill(h, row..row + 1, start..row + 1);
                    }
                    start += size;
                }
                let last = windows[windows.len() - 1];
                for i in (start..n).step_by(last) {
                    let end = (i + last).min(n);
                    for row in i..end {
                        layout.fill(h, row..row + 1, i..row + 1);
                    }
                }
                for &(s, e) in &globals {
                    if s < n {
                        layout.fill(h, s..n, s..e.min(n));
                    }
                }
            }
        }
        AttentionKind::Bigbird => {
            let random = config.num_random_blocks.unwrap_or(1);
            let window = config.num_sliding_window_blocks.unwrap_or(3);
            let global = config.num_global_blocks.unwrap_or(1);
            for (what, k) in [
                ("num_random_blocks", random),
                ("num_sliding_window_blocks", window),
                ("num_global_blocks", global),
            ] {
                if n < k {
                    return Err(format!("{what} {k} exceeds the {n} blocks of a row"));
                }
            }
            if random > 1 {
                return Err(format!(
                    "num_random_blocks {random}: unidirectional BigBird draws them from the \
                     blocks up to each row, and the first row has one (DeepSpeed fails there)"
                ));
            }
            for h in 0..layout_heads {
                for row in 0..n {
                    for col in rng.sample(row + 1, random) {
                        layout.set(h, row, col);
                    }
                }
                sliding_window(&mut layout, h, window, true);
                layout.fill(h, 0..global, 0..n);
                layout.fill(h, 0..n, 0..global);
                layout.tril();
            }
        }
        AttentionKind::Bslongformer => {
            let window = config.num_sliding_window_blocks.unwrap_or(3);
            let globals = global_windows()?;
            if n < window {
                return Err(format!(
                    "num_sliding_window_blocks {window} exceeds the {n} blocks of a row"
                ));
            }
            for h in 0..layout_heads {
                sliding_window(&mut layout, h, window, true);
                for &(s, e) in &globals {
                    if s < n {
                        let e = e.min(n);
                        layout.fill(h, s..e, 0..n);
                        layout.fill(h, 0..n, s..e);
                    }
                }
                layout.tril();
            }
        }
        AttentionKind::Local => {
            // GPT-NeoX: `num_local_blocks`, else `num_sliding_window_blocks`, else 4.
            let window = config
                .num_local_blocks
                .or(config.num_sliding_window_blocks)
                .unwrap_or(4);
            if n < window {
                return Err(format!(
                    "the local window of {window} blocks exceeds the {n} blocks of a row"
                ));
            }
            // LocalSlidingWindowSparsityConfig: one layout for all heads.
            sliding_window(&mut layout, 0, window, false);
            layout.propagate_first_head();
            return Ok(layout);
        }
    }
    if !per_head {
        layout.propagate_first_head();
    }
    Ok(layout)
}

/// Rows attend to `window / 2` blocks before them (and after, when `both`).
fn sliding_window(layout: &mut BlockLayout, h: usize, window: usize, both: bool) {
    let (n, w) = (layout.blocks, window / 2);
    for row in 0..n {
        let end = if both { (row + w + 1).min(n) } else { row + 1 };
        layout.fill(h, row..row + 1, row.saturating_sub(w)..end);
    }
}

/// The layouts of every sparse layer (`None` for global and flash ones),
/// drawn in layer order from one `random.seed(config.seed)`.
pub fn layer_layouts(
    kinds: &[AttentionKind],
    config: &SparsityConfig,
    heads: usize,
    seq_len: usize,
) -> Result<Vec<Option<BlockLayout>>, String> {
    let mut rng = PyRandom::new(config.seed);
    kinds
        .iter()
        .map(|&kind| {
            kind.is_sparse()
                .then(|| make_layout(kind, config, heads, seq_len, &mut rng))
                .transpose()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_sample_matches_cpython() {
        // CPython 3.11: random.seed(1234); [random.sample(range(n), k) for ...].
        let mut rng = PyRandom::new(1234);
        assert_eq!(rng.sample(10, 3), [7, 1, 0]);
        assert_eq!(rng.sample(100, 2), [11, 74]);
        assert_eq!(rng.sample(1, 1), [0]);
        assert_eq!(rng.sample(30, 7), [21, 22, 2, 3, 24, 11, 7]);
    }
}
