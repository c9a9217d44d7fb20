//! A communicator that counts what its rank puts into collectives, around any
//! engine: how 1-bit Adam's traffic is measured against the f32 all-reduce.
//!
//! The count is the payload this rank hands over, whatever the engine's
//! algorithm does with it: the whole buffer of an all-reduce, `send` of an
//! all-gather, reduce-scatter or all-to-all (its own part included), a
//! broadcast's buffer on the root, a `send`'s bytes. Receiving, `recv` and
//! barriers count nothing. Sub-groups add to the same count.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{CommError, Communicator, DType, ReduceOp};

/// `inner`, with the bytes this rank hands to it counted.
pub struct CountingComm {
    inner: Arc<dyn Communicator>,
    sent: Arc<AtomicU64>,
}

impl CountingComm {
    pub fn new(inner: Arc<dyn Communicator>) -> Self {
        CountingComm {
            inner,
            sent: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Bytes counted so far, this group and its sub-groups together.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn count(&self, bytes: usize) {
        self.sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

impl Communicator for CountingComm {
    fn rank(&self) -> usize {
        self.inner.rank()
    }

    fn size(&self) -> usize {
        self.inner.size()
    }

    fn timeout(&self) -> Duration {
        self.inner.timeout()
    }

    fn all_reduce(&self, buf: &mut [u8], dtype: DType, op: ReduceOp) -> Result<(), CommError> {
        self.count(buf.len());
        self.inner.all_reduce(buf, dtype, op)
    }

    fn broadcast(&self, buf: &mut [u8], root: usize) -> Result<(), CommError> {
        if self.rank() == root {
            self.count(buf.len());
        }
        self.inner.broadcast(buf, root)
    }

    fn all_gather(&self, send: &[u8], recv: &mut [u8], counts: &[usize]) -> Result<(), CommError> {
        self.count(send.len());
        self.inner.all_gather(send, recv, counts)
    }

    fn reduce_scatter(
        &self,
        send: &[u8],
        recv: &mut [u8],
        counts: &[usize],
        dtype: DType,
        op: ReduceOp,
    ) -> Result<(), CommError> {
        self.count(send.len());
        self.inner.reduce_scatter(send, recv, counts, dtype, op)
    }

    fn all_to_all(&self, send: &[u8], recv: &mut [u8]) -> Result<(), CommError> {
        self.count(send.len());
        self.inner.all_to_all(send, recv)
    }

    fn send(&self, buf: &[u8], to: usize) -> Result<(), CommError> {
        self.count(buf.len());
        self.inner.send(buf, to)
    }

    fn recv(&self, buf: &mut [u8], from: usize) -> Result<(), CommError> {
        self.inner.recv(buf, from)
    }

    fn barrier(&self) -> Result<(), CommError> {
        self.inner.barrier()
    }

    fn sub_group(&self, ranks: &[usize]) -> Result<Arc<dyn Communicator>, CommError> {
        Ok(Arc::new(CountingComm {
            inner: self.inner.sub_group(ranks)?,
            sent: self.sent.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::comm::CommExt;
    use crate::dist::comm::threads::ThreadComm;

    #[test]
    fn counts_the_payload_each_rank_hands_over() {
        let comms = ThreadComm::group(2, Duration::from_secs(10));
        let counted: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = comms
                .into_iter()
                .map(|c| {
                    s.spawn(move || {
                        let c = CountingComm::new(Arc::new(c));
                        let mut v = [1f32; 10];
                        c.all_reduce_f32(&mut v, ReduceOp::Sum).unwrap();
                        assert_eq!(v, [2.0; 10]);
                        let mut b = [c.rank() as u8; 6];
                        c.broadcast(&mut b, 1).unwrap();
                        assert_eq!(b, [1; 6]);
                        let send = [c.rank() as u8; 4];
                        let mut recv = [0u8; 8];
                        c.all_to_all(&[c.rank() as u8 * 10, 0, 1, 2], &mut recv[..4])
                            .unwrap();
                        c.all_gather(&send, &mut recv, &[4, 4]).unwrap();
                        assert_eq!(recv, [0, 0, 0, 0, 1, 1, 1, 1]);
                        c.barrier().unwrap();
                        c.sent()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // 40 (all-reduce) + 4 (all-to-all) + 4 (all-gather), and rank 1
        // also the 6 bytes it broadcast.
        assert_eq!(counted, [48, 54]);
    }
}
