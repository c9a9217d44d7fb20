//! Metrics as JSON lines in the run folder (`metrics.jsonl`), one object per
//! logged training interval or evaluation.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use crate::fsutil::write_atomic;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    /// The training interval ending at `iteration`.
    Train {
        iteration: u64,
        /// Mean loss over the interval's iterations.
        loss: f64,
        lr: f64,
        /// The gradient norm of the interval's last applied step (an fp16
        /// step skipped for overflow has none).
        grad_norm: f64,
        /// Mean wall time of one iteration, milliseconds.
        step_ms: f64,
        tokens_per_s: f64,
        /// Achieved model FLOP/s (see `ModelConfig::train_flops_per_token`).
        flops_per_s: f64,
        consumed_samples: u64,
        /// fp16: the loss scale after the interval's last step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        loss_scale: Option<f64>,
        /// fp16: steps of the interval skipped for overflowing gradients.
        #[serde(default, skip_serializing_if = "is_zero")]
        skipped_iters: u64,
    },
    /// An evaluation on the validation split after `iteration`.
    Valid { iteration: u64, loss: f64, ppl: f64 },
    /// The evaluation on the test split at the end.
    Test { iteration: u64, loss: f64, ppl: f64 },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Record {
    pub fn iteration(&self) -> u64 {
        match self {
            Record::Train { iteration, .. }
            | Record::Valid { iteration, .. }
            | Record::Test { iteration, .. } => *iteration,
        }
    }
}

/// The metrics file of a run.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl MetricsLog {
    /// Opens `dir/metrics.jsonl`, keeping only the records up to `resumed_at`
    /// (a resumed run rewrites what followed its checkpoint).
    pub fn open(dir: &Path, resumed_at: u64) -> Result<Self, TrainError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join("metrics.jsonl");
        if path.exists() {
            let kept: Vec<Record> = read(&path)?
                .into_iter()
                .filter(|r| r.iteration() <= resumed_at)
                .collect();
            let mut text = String::new();
            for record in &kept {
                text.push_str(&serde_json::to_string(record).unwrap_or_default());
                text.push('\n');
            }
            write_atomic(&path, text.as_bytes()).map_err(io(&path))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        Ok(MetricsLog { path, file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, record: &Record) -> Result<(), TrainError> {
        let line = serde_json::to_string(record).map_err(|e| TrainError::Data(e.to_string()))?;
        writeln!(self.file, "{line}").map_err(io(&self.path))?;
        self.file.flush().map_err(io(&self.path))
    }
}

/// Reads a metrics file; a torn last line (a killed run) is skipped.
pub fn read(path: &Path) -> Result<Vec<Record>, TrainError> {
    let file = File::open(path).map_err(io(path))?;
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(io(path))?;
    let last = lines.len().saturating_sub(1);
    let mut records = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(record) => records.push(record),
            Err(_) if n == last => {}
            Err(e) => {
                return Err(TrainError::Data(format!(
                    "{}:{}: {e}",
                    path.display(),
                    n + 1
                )));
            }
        }
    }
    Ok(records)
}
