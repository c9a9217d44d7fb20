//! How a fetch reports progress; the binary decides how to show it.

/// Receives the progress of one file's transfer.
pub trait Progress: Send + Sync {
    /// A transfer of `label` starts at `done` bytes of `total` (if known).
    fn start(&self, label: &str, done: u64, total: Option<u64>);
    /// `bytes` more arrived.
    fn advance(&self, bytes: u64);
    /// The transfer ended (finished or interrupted).
    fn finish(&self);
}

/// Shows nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _label: &str, _done: u64, _total: Option<u64>) {}
    fn advance(&self, _bytes: u64) {}
    fn finish(&self) {}
}
