//! Ranks as threads of one process: messages are handed over in memory.
//!
//! [`ThreadComm::group`] makes one communicator per rank, to be moved into
//! that rank's thread. Dropping a rank's communicator (and every sub-group
//! made from it), as a thread does when it ends or panics, tells the others
//! at once: their waits on it end with [`CommError::PeerLost`]. A rank that
//! stays alive but never calls ends their waits with [`CommError::Timeout`].

use std::sync::Arc;
use std::time::Duration;

use super::CommError;
use super::mesh::{Inbox, Links, MeshComm};

/// A rank of a group of threads; see [`MeshComm`] for the collectives.
pub type ThreadComm = MeshComm<ThreadLinks>;

/// The mailboxes of one rank of a thread group.
pub struct ThreadLinks {
    rank: usize,
    /// `boxes[to][from]`: what `from` sent to `to`.
    boxes: Arc<Vec<Vec<Inbox>>>,
}

impl ThreadComm {
    /// One communicator per rank of a group of `n` threads (`n >= 1`), in
    /// rank order; every wait lasts at most `timeout` of silence.
    pub fn group(n: usize, timeout: Duration) -> Vec<ThreadComm> {
        let boxes: Arc<Vec<Vec<Inbox>>> = Arc::new(
            (0..n)
                .map(|_| (0..n).map(|_| Inbox::new()).collect())
                .collect(),
        );
        (0..n)
            .map(|rank| {
                let links = ThreadLinks {
                    rank,
                    boxes: boxes.clone(),
                };
                MeshComm::world(Arc::new(links), rank, n, timeout)
            })
            .collect()
    }
}

impl Links for ThreadLinks {
    fn send(
        &self,
        to: usize,
        channel: u64,
        data: &[u8],
        _timeout: Duration,
        during: &'static str,
    ) -> Result<(), CommError> {
        let inbox = &self.boxes[to][self.rank];
        if let Some(message) = inbox.lost() {
            return Err(CommError::PeerLost {
                rank: to,
                during,
                message,
            });
        }
        inbox.push(channel, data.to_vec());
        Ok(())
    }

    fn inbox(&self, from: usize) -> &Inbox {
        &self.boxes[self.rank][from]
    }
}

impl Drop for ThreadLinks {
    fn drop(&mut self) {
        let why = "its communicator was dropped (its thread ended or panicked)";
        for (other, boxes) in self.boxes.iter().enumerate() {
            if other != self.rank {
                // Nothing more comes from this rank, and nothing sent to it is read.
                boxes[self.rank].close(why);
                self.boxes[self.rank][other].close(why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::comm::{CommExt, Communicator, ReduceOp};
    use std::time::Instant;

    fn on_threads<T: Send + 'static>(
        n: usize,
        timeout: Duration,
        f: impl Fn(ThreadComm) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        let f = Arc::new(f);
        let handles: Vec<_> = ThreadComm::group(n, timeout)
            .into_iter()
            .map(|c| {
                let f = f.clone();
                std::thread::spawn(move || f(c))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn all_reduce_sums_in_rank_order() {
        let out = on_threads(3, Duration::from_secs(10), |c| {
            let mut v = vec![c.rank() as f32 + 0.5; 5];
            c.all_reduce_f32(&mut v, ReduceOp::Sum).unwrap();
            v
        });
        for v in out {
            assert_eq!(v, vec![0.5 + 1.5 + 2.5; 5]);
        }
    }

    #[test]
    fn a_rank_that_never_calls_is_named_after_the_timeout() {
        let timeout = Duration::from_millis(300);
        let out = on_threads(3, timeout, move |c| {
            if c.rank() == 2 {
                // Alive, holding its communicator, but never calling.
                std::thread::sleep(timeout * 6);
                return None;
            }
            let start = Instant::now();
            let err = c.barrier().unwrap_err();
            Some((err, start.elapsed()))
        });
        for (err, took) in out.into_iter().flatten() {
            assert!(matches!(err, CommError::Timeout { rank: 2, .. }), "{err}");
            assert!(took >= timeout && took < timeout * 5, "{took:?}");
        }
    }

    #[test]
    fn a_dropped_rank_is_reported_lost_at_once() {
        let timeout = Duration::from_secs(30);
        let out = on_threads(2, timeout, |c| {
            if c.rank() == 1 {
                drop(c);
                return None;
            }
            let start = Instant::now();
            let err = c.barrier().unwrap_err();
            Some((err, start.elapsed()))
        });
        let (err, took) = out.into_iter().flatten().next().unwrap();
        assert!(matches!(err, CommError::PeerLost { rank: 1, .. }), "{err}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
}
