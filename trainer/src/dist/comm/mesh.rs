//! Collectives over point-to-point links: the algorithms the thread and TCP
//! engines share, so that both give the same bytes.
//!
//! Every pair of ranks has an ordered stream of messages per channel; a
//! channel (a `u64` tag) separates groups and, inside a group, collective
//! traffic from `send`/`recv`. Each element of a reduction is combined by one
//! rank (its chunk's owner) in rank order with [`reduce_into`], then shared:
//! the result equals the serial `((r0 op r1) op r2) ...` bit for bit.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::args::{self, even_split, mismatch, ranges};
use super::{CommError, Communicator, DType, ReduceOp, reduce_into};

/// How a process reaches the other ranks of its world.
pub trait Links: Send + Sync + 'static {
    /// Delivers `data` on `channel` to world rank `to`, after the messages sent
    /// there before it.
    fn send(
        &self,
        to: usize,
        channel: u64,
        data: &[u8],
        timeout: Duration,
        during: &'static str,
    ) -> Result<(), CommError>;

    /// The messages arriving from world rank `from`.
    fn inbox(&self, from: usize) -> &Inbox;
}

/// The messages that arrived from one peer, by channel, until it is lost.
pub struct Inbox {
    state: Mutex<InboxState>,
    changed: Condvar,
}

struct InboxState {
    queues: HashMap<u64, VecDeque<Vec<u8>>>,
    /// Why the peer is gone, once it is.
    lost: Option<String>,
    /// When bytes last came from the peer (a long message keeps it fresh).
    last_seen: Instant,
}

impl Inbox {
    pub(crate) fn new() -> Inbox {
        Inbox {
            state: Mutex::new(InboxState {
                queues: HashMap::new(),
                lost: None,
                last_seen: Instant::now(),
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, InboxState> {
        // A panic elsewhere cannot leave the queues half-updated; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, channel: u64, data: Vec<u8>) {
        let mut state = self.lock();
        state.queues.entry(channel).or_default().push_back(data);
        state.last_seen = Instant::now();
        drop(state);
        self.changed.notify_all();
    }

    /// Notes that bytes are arriving (part of a long message).
    pub(crate) fn touch(&self) {
        self.lock().last_seen = Instant::now();
    }

    /// Marks the peer gone; messages already queued can still be taken.
    pub(crate) fn close(&self, why: &str) {
        let mut state = self.lock();
        if state.lost.is_none() {
            state.lost = Some(why.to_string());
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Why the peer is gone, if it is.
    pub(crate) fn lost(&self) -> Option<String> {
        self.lock().lost.clone()
    }

    /// The next message on `channel`; waits until the peer has been silent for
    /// `timeout` (counted from the call or from its last bytes, the later).
    pub(crate) fn take(
        &self,
        peer: usize,
        channel: u64,
        timeout: Duration,
        during: &'static str,
    ) -> Result<Vec<u8>, CommError> {
        let start = Instant::now();
        let mut state = self.lock();
        loop {
            if let Some(data) = state.queues.get_mut(&channel).and_then(|q| q.pop_front()) {
                return Ok(data);
            }
            if let Some(message) = &state.lost {
                return Err(CommError::PeerLost {
                    rank: peer,
                    during,
                    message: message.clone(),
                });
            }
            let deadline = start.max(state.last_seen) + timeout;
            let now = Instant::now();
            if now >= deadline {
                return Err(CommError::Timeout {
                    rank: peer,
                    timeout,
                    during,
                });
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A group of ranks over [`Links`]: the [`Communicator`] of the thread and
/// TCP engines. Errors name ranks of the world (the group the engine made
/// first), not of a sub-group.
pub struct MeshComm<L: Links> {
    links: Arc<L>,
    /// World ranks of the group, ascending.
    ranks: Vec<usize>,
    /// This rank's index in `ranks`.
    me: usize,
    /// Collective traffic of this group; `channel + 1` is its send/recv.
    channel: u64,
    timeout: Duration,
    /// Sub-groups made so far (their channels derive from the count).
    made: AtomicU64,
}

impl<L: Links> MeshComm<L> {
    /// The whole world of `links`, as world rank `rank`.
    pub(crate) fn world(links: Arc<L>, rank: usize, size: usize, timeout: Duration) -> Self {
        MeshComm {
            links,
            ranks: (0..size).collect(),
            me: rank,
            channel: 0,
            timeout,
            made: AtomicU64::new(0),
        }
    }

    fn put(&self, to: usize, data: &[u8], during: &'static str) -> Result<(), CommError> {
        self.put_on(self.channel, to, data, during)
    }

    fn put_on(
        &self,
        channel: u64,
        to: usize,
        data: &[u8],
        during: &'static str,
    ) -> Result<(), CommError> {
        self.links
            .send(self.ranks[to], channel, data, self.timeout, during)
    }

    /// The next message from group rank `from`, which must be `len` bytes.
    fn get(&self, from: usize, len: usize, during: &'static str) -> Result<Vec<u8>, CommError> {
        self.get_on(self.channel, from, len, during)
    }

    fn get_on(
        &self,
        channel: u64,
        from: usize,
        len: usize,
        during: &'static str,
    ) -> Result<Vec<u8>, CommError> {
        let peer = self.ranks[from];
        let data = self
            .links
            .inbox(peer)
            .take(peer, channel, self.timeout, during)?;
        if data.len() != len {
            return Err(CommError::Mismatch {
                during,
                message: format!(
                    "rank {peer} sent {} bytes where rank {} expected {len}",
                    data.len(),
                    self.ranks[self.me]
                ),
            });
        }
        Ok(data)
    }

    fn peers(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.ranks.len()).filter(move |&r| r != self.me)
    }

    /// Reduces this rank's slice `[mine]` of every rank's `send` (of which this
    /// rank's own is `own`) into `out`, in rank order, after sending the other
    /// slices to their owners. `slices[r]` is the byte range rank r owns.
    fn reduce_owned(
        &self,
        own: &[u8],
        slices: &[std::ops::Range<usize>],
        out: &mut [u8],
        dtype: DType,
        op: ReduceOp,
        during: &'static str,
    ) -> Result<(), CommError> {
        for p in self.peers() {
            self.put(p, &own[slices[p].clone()], during)?;
        }
        let mine = slices[self.me].clone();
        let len = mine.len();
        for r in 0..self.ranks.len() {
            if r == self.me {
                if r == 0 {
                    out.copy_from_slice(&own[mine.clone()]);
                } else {
                    reduce_into(out, &own[mine.clone()], dtype, op);
                }
            } else {
                let part = self.get(r, len, during)?;
                if r == 0 {
                    out.copy_from_slice(&part);
                } else {
                    reduce_into(out, &part, dtype, op);
                }
            }
        }
        Ok(())
    }
}

/// A 64-bit mix (splitmix64's finalizer): channels of sub-groups.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl<L: Links> Communicator for MeshComm<L> {
    fn rank(&self) -> usize {
        self.me
    }

    fn size(&self) -> usize {
        self.ranks.len()
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn all_reduce(&self, buf: &mut [u8], dtype: DType, op: ReduceOp) -> Result<(), CommError> {
        const DURING: &str = "all_reduce";
        args::whole(buf.len(), dtype, DURING)?;
        let n = self.ranks.len();
        if n == 1 {
            return Ok(());
        }
        let counts: Vec<usize> = even_split(buf.len() / dtype.size(), n)
            .into_iter()
            .map(|c| c * dtype.size())
            .collect();
        let slices = ranges(&counts);
        let mine = slices[self.me].clone();
        let mut reduced = vec![0u8; mine.len()];
        self.reduce_owned(buf, &slices, &mut reduced, dtype, op, DURING)?;
        buf[mine].copy_from_slice(&reduced);
        for p in self.peers() {
            self.put(p, &reduced, DURING)?;
        }
        for p in self.peers() {
            let part = self.get(p, slices[p].len(), DURING)?;
            buf[slices[p].clone()].copy_from_slice(&part);
        }
        Ok(())
    }

    fn broadcast(&self, buf: &mut [u8], root: usize) -> Result<(), CommError> {
        const DURING: &str = "broadcast";
        args::root(root, self.ranks.len(), DURING)?;
        if self.me == root {
            for p in self.peers() {
                self.put(p, buf, DURING)?;
            }
        } else {
            let data = self.get(root, buf.len(), DURING)?;
            buf.copy_from_slice(&data);
        }
        Ok(())
    }

    fn all_gather(&self, send: &[u8], recv: &mut [u8], counts: &[usize]) -> Result<(), CommError> {
        const DURING: &str = "all_gather";
        args::counts(
            counts,
            self.me,
            self.ranks.len(),
            recv.len(),
            send.len(),
            DURING,
        )?;
        let slices = ranges(counts);
        for p in self.peers() {
            self.put(p, send, DURING)?;
        }
        recv[slices[self.me].clone()].copy_from_slice(send);
        for p in self.peers() {
            let part = self.get(p, counts[p], DURING)?;
            recv[slices[p].clone()].copy_from_slice(&part);
        }
        Ok(())
    }

    fn reduce_scatter(
        &self,
        send: &[u8],
        recv: &mut [u8],
        counts: &[usize],
        dtype: DType,
        op: ReduceOp,
    ) -> Result<(), CommError> {
        const DURING: &str = "reduce_scatter";
        args::counts(
            counts,
            self.me,
            self.ranks.len(),
            send.len(),
            recv.len(),
            DURING,
        )?;
        for &c in counts {
            args::whole(c, dtype, DURING)?;
        }
        self.reduce_owned(send, &ranges(counts), recv, dtype, op, DURING)
    }

    fn all_to_all(&self, send: &[u8], recv: &mut [u8]) -> Result<(), CommError> {
        const DURING: &str = "all_to_all";
        let part = args::parts(send.len(), recv.len(), self.ranks.len(), DURING)?;
        let at = |r: usize| r * part..(r + 1) * part;
        for p in self.peers() {
            self.put(p, &send[at(p)], DURING)?;
        }
        recv[at(self.me)].copy_from_slice(&send[at(self.me)]);
        for p in self.peers() {
            let data = self.get(p, part, DURING)?;
            recv[at(p)].copy_from_slice(&data);
        }
        Ok(())
    }

    fn send(&self, buf: &[u8], to: usize) -> Result<(), CommError> {
        const DURING: &str = "send";
        args::peer(to, self.me, self.ranks.len(), DURING)?;
        self.put_on(self.channel + 1, to, buf, DURING)
    }

    fn recv(&self, buf: &mut [u8], from: usize) -> Result<(), CommError> {
        const DURING: &str = "recv";
        args::peer(from, self.me, self.ranks.len(), DURING)?;
        let data = self.get_on(self.channel + 1, from, buf.len(), DURING)?;
        buf.copy_from_slice(&data);
        Ok(())
    }

    fn barrier(&self) -> Result<(), CommError> {
        const DURING: &str = "barrier";
        for p in self.peers() {
            self.put(p, &[], DURING)?;
        }
        for p in self.peers() {
            self.get(p, 0, DURING)?;
        }
        Ok(())
    }

    fn sub_group(&self, ranks: &[usize]) -> Result<Arc<dyn Communicator>, CommError> {
        const DURING: &str = "sub_group";
        let n = self.ranks.len();
        let ascending = ranks.windows(2).all(|w| w[0] < w[1]);
        let Some(me) = ranks.iter().position(|&r| r == self.me) else {
            return Err(mismatch(
                DURING,
                format!("rank {} is not among {ranks:?}", self.me),
            ));
        };
        if !ascending || ranks.iter().any(|&r| r >= n) {
            return Err(mismatch(
                DURING,
                format!("{ranks:?} are not ascending ranks of a group of {n}"),
            ));
        }
        // Every rank of the group makes the same calls in the same order, so
        // the count agrees; members of one sub-group also agree on `ranks`.
        let made = self.made.fetch_add(1, Ordering::Relaxed);
        let mut channel = mix(self.channel ^ mix(made + 1));
        for &r in ranks {
            channel = mix(channel ^ r as u64);
        }
        Ok(Arc::new(MeshComm {
            links: self.links.clone(),
            ranks: ranks.iter().map(|&r| self.ranks[r]).collect(),
            me,
            channel: channel & !1,
            timeout: self.timeout,
            made: AtomicU64::new(0),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_everything_in_order() {
        assert_eq!(even_split(10, 3), [4, 3, 3]);
        assert_eq!(even_split(2, 4), [1, 1, 0, 0]);
        assert_eq!(ranges(&[3, 0, 2]), [0..3, 3..3, 3..5]);
    }

    #[test]
    fn inbox_delivers_in_order_then_reports_loss_and_silence() {
        let inbox = Inbox::new();
        inbox.push(7, vec![1]);
        inbox.push(7, vec![2]);
        inbox.push(9, vec![3]);
        let t = Duration::from_millis(50);
        assert_eq!(inbox.take(4, 9, t, "t").unwrap(), [3]);
        assert_eq!(inbox.take(4, 7, t, "t").unwrap(), [1]);
        let started = Instant::now();
        let err = inbox.take(4, 9, t, "t").unwrap_err();
        assert!(matches!(err, CommError::Timeout { rank: 4, .. }), "{err}");
        assert!(started.elapsed() >= t && started.elapsed() < t * 20);
        inbox.close("gone");
        assert_eq!(inbox.take(4, 7, t, "t").unwrap(), [2]);
        let err = inbox.take(4, 7, t, "t").unwrap_err();
        assert!(matches!(err, CommError::PeerLost { rank: 4, .. }), "{err}");
    }
}
