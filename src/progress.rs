//! Progress of long data jobs: a bar on a terminal, `tracing` lines otherwise.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use neox_datasets::read::ReadError;

use crate::pipeline::{Progress, Reporter};

/// Malformed lines shown one by one; later ones are only counted.
const SHOWN_MALFORMED: u64 = 20;
/// Time between log lines when not on a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Shows [`Progress`]: an indicatif bar over the input bytes on a terminal
/// (documents, tokens, throughput, ETA), else an info line every few seconds.
pub struct ProgressReporter {
    bar: Option<ProgressBar>,
    expected_docs: Option<u64>,
    next_log: Duration,
    malformed: u64,
}

impl ProgressReporter {
    /// A reporter for stderr; `expected_docs` (GPT-NeoX's `--num-docs`) is
    /// shown as the documents' total when known.
    pub fn new(expected_docs: Option<u64>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} (ETA {eta}) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            expected_docs,
            next_log: LOG_EVERY,
            malformed: 0,
        }
    }

    /// Clear the bar (call before printing the summary).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.malformed > SHOWN_MALFORMED {
            tracing::warn!(
                "{} malformed lines in all ({} shown)",
                self.malformed,
                SHOWN_MALFORMED
            );
        }
    }

    fn describe(&self, p: &Progress) -> String {
        let docs = match self.expected_docs {
            Some(total) => format!("{}/{total} docs", p.documents),
            None => format!("{} docs", p.documents),
        };
        let secs = p.elapsed.as_secs_f64().max(1e-9);
        let mut line = format!(
            "{docs}, {} tokens, {:.2} MB/s of text, {:.0} tokens/s",
            p.tokens,
            p.text_bytes as f64 / 1e6 / secs,
            p.tokens as f64 / secs
        );
        if p.malformed > 0 {
            line += &format!(", {} malformed", p.malformed);
        }
        line
    }
}

impl Reporter for ProgressReporter {
    fn progress(&mut self, p: &Progress) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(p.input_total);
                bar.set_position(p.input_bytes.min(p.input_total));
                bar.set_message(self.describe(p));
            }
            None if p.elapsed >= self.next_log => {
                self.next_log = p.elapsed + LOG_EVERY;
                let percent = 100.0 * p.input_bytes as f64 / p.input_total.max(1) as f64;
                tracing::info!("{:.1}% of the input read; {}", percent, self.describe(p));
            }
            None => {}
        }
    }

    fn malformed(&mut self, error: &ReadError) {
        self.malformed += 1;
        if self.malformed > SHOWN_MALFORMED {
            return;
        }
        let show = || {
            tracing::warn!("skipped: {error}");
            if self.malformed == SHOWN_MALFORMED {
                tracing::warn!("further malformed lines are counted, not shown");
            }
        };
        match &self.bar {
            Some(bar) => bar.suspend(show),
            None => show(),
        }
    }
}
