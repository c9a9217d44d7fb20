//! The communicator: what ranks say to one another, on flat host buffers.
//!
//! One interface, three engines: [`threads`] (ranks as threads of one process:
//! tests, one machine), [`tcp`] (ranks as processes on one or many machines,
//! with the rendezvous at `MASTER_ADDR`), and `nccl` (GPUs, `cuda` feature).
//!
//! Every reduction combines the ranks' contributions in rank order
//! (`((r0 + r1) + r2) + ...`), so a run is reproducible bit for bit and equals
//! a single device that accumulated the same parts in that order. Every call
//! waits at most the communicator's timeout; a rank that died or stalled ends
//! the call with [`CommError`] naming it, never a hang.

mod args;
pub mod compressed;
pub mod counting;
pub mod mesh;
#[cfg(feature = "cuda")]
pub mod nccl;
pub mod tcp;
pub mod threads;

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

/// How contributions are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
}

/// The element type of a reduced buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F64,
    I64,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 | DType::I64 => 8,
        }
    }
}

/// Why a collective failed.
#[derive(Debug, Error)]
pub enum CommError {
    #[error("rank {rank} did not answer within {timeout:?} (during {during}): it died or stalled")]
    Timeout {
        rank: usize,
        timeout: Duration,
        during: &'static str,
    },
    #[error("rank {rank} is gone (during {during}): {message}")]
    PeerLost {
        rank: usize,
        during: &'static str,
        message: String,
    },
    #[error("rendezvous at {address}: {message}")]
    Rendezvous { address: String, message: String },
    #[error("{during}: {message}")]
    Mismatch {
        during: &'static str,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}

/// Ranks `0..size()` of one group. Calls are collective: every rank of the
/// group makes the same calls in the same order (send/recv pairwise).
/// Implementations are `Send + Sync` so a backward pass may hold an `Arc` of one.
pub trait Communicator: Send + Sync {
    /// This rank in the group.
    fn rank(&self) -> usize;
    /// Ranks in the group.
    fn size(&self) -> usize;
    /// How long one call waits for a peer.
    fn timeout(&self) -> Duration;

    /// Every rank ends with the elementwise reduction of all ranks' `buf`
    /// (`buf.len()` a multiple of `dtype.size()`, the same on every rank),
    /// combined in rank order.
    fn all_reduce(&self, buf: &mut [u8], dtype: DType, op: ReduceOp) -> Result<(), CommError>;

    /// Every rank ends with `root`'s `buf` (same length everywhere).
    fn broadcast(&self, buf: &mut [u8], root: usize) -> Result<(), CommError>;

    /// `recv` (the sum of `counts`) ends as the concatenation of every rank's
    /// `send` in rank order; rank r's `send` is `counts[r]` bytes.
    fn all_gather(&self, send: &[u8], recv: &mut [u8], counts: &[usize]) -> Result<(), CommError>;

    /// `send` (the sum of `counts`, the same layout on every rank) is reduced
    /// elementwise over the ranks in rank order; rank r receives its slice
    /// (`counts[r]` bytes, at the offset of the counts before it) in `recv`.
    fn reduce_scatter(
        &self,
        send: &[u8],
        recv: &mut [u8],
        counts: &[usize],
        dtype: DType,
        op: ReduceOp,
    ) -> Result<(), CommError>;

    /// `send` holds `size()` equal parts; part p goes to rank p. `recv` (as
    /// long as `send`) ends as the parts addressed to this rank, in the
    /// senders' rank order (its own part copied across).
    ///
    /// This default exchanges the parts pairwise with [`Communicator::send`]
    /// and [`Communicator::recv`], the lower rank of each pair sending first,
    /// so it also holds for engines whose `send` waits for the receiver; the
    /// engines here override it with one exchange.
    fn all_to_all(&self, send: &[u8], recv: &mut [u8]) -> Result<(), CommError> {
        let (me, n) = (self.rank(), self.size());
        let part = args::parts(send.len(), recv.len(), n, "all_to_all")?;
        let at = |r: usize| r * part..(r + 1) * part;
        recv[at(me)].copy_from_slice(&send[at(me)]);
        for p in (0..n).filter(|&p| p != me) {
            if p < me {
                self.recv(&mut recv[at(p)], p)?;
                self.send(&send[at(p)], p)?;
            } else {
                self.send(&send[at(p)], p)?;
                self.recv(&mut recv[at(p)], p)?;
            }
        }
        Ok(())
    }

    /// Sends `buf` to rank `to`, which receives it with [`Communicator::recv`]
    /// (same length). Messages between one pair arrive in the order sent.
    fn send(&self, buf: &[u8], to: usize) -> Result<(), CommError>;

    /// Receives the next message from rank `from` into `buf` (its exact length).
    fn recv(&self, buf: &mut [u8], from: usize) -> Result<(), CommError>;

    /// Returns when every rank has entered it.
    fn barrier(&self) -> Result<(), CommError>;

    /// A sub-group of `ranks` (ranks of this group, ascending; this rank among
    /// them), numbered 0.. in that order. Collective over the whole group: every
    /// rank calls it with its own sub-group's ranks, in the same order of calls.
    fn sub_group(&self, ranks: &[usize]) -> Result<Arc<dyn Communicator>, CommError>;
}

/// Typed conveniences over the byte-level interface.
pub trait CommExt: Communicator {
    fn all_reduce_f32(&self, buf: &mut [f32], op: ReduceOp) -> Result<(), CommError> {
        self.all_reduce(bytemuck::cast_slice_mut(buf), DType::F32, op)
    }
    fn all_reduce_f64(&self, buf: &mut [f64], op: ReduceOp) -> Result<(), CommError> {
        self.all_reduce(bytemuck::cast_slice_mut(buf), DType::F64, op)
    }
    fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> Result<(), CommError> {
        self.broadcast(bytemuck::cast_slice_mut(buf), root)
    }
    /// Broadcasts a byte vector whose length only `root` knows.
    fn broadcast_vec(&self, buf: &mut Vec<u8>, root: usize) -> Result<(), CommError> {
        let mut len = (buf.len() as u64).to_le_bytes();
        self.broadcast(&mut len, root)?;
        buf.resize(u64::from_le_bytes(len) as usize, 0);
        self.broadcast(buf, root)
    }
    /// `recv` ends as every rank's `send` concatenated; `counts` in elements.
    fn all_gather_f32(
        &self,
        send: &[f32],
        recv: &mut [f32],
        counts: &[usize],
    ) -> Result<(), CommError> {
        let bytes: Vec<usize> = counts.iter().map(|c| c * 4).collect();
        self.all_gather(
            bytemuck::cast_slice(send),
            bytemuck::cast_slice_mut(recv),
            &bytes,
        )
    }
    /// Reduce-scatter of `f32`s; `counts` in elements.
    fn reduce_scatter_f32(
        &self,
        send: &[f32],
        recv: &mut [f32],
        counts: &[usize],
        op: ReduceOp,
    ) -> Result<(), CommError> {
        let bytes: Vec<usize> = counts.iter().map(|c| c * 4).collect();
        self.reduce_scatter(
            bytemuck::cast_slice(send),
            bytemuck::cast_slice_mut(recv),
            &bytes,
            DType::F32,
            op,
        )
    }
}

impl<C: Communicator + ?Sized> CommExt for C {}

/// Reduces `src` into `acc` elementwise (`acc = acc op src`), both holding
/// `dtype`s (native byte order; any alignment). The one place where
/// contributions are combined, shared by the engines so that they agree bit
/// for bit. `Max` propagates NaN; integer sums wrap.
pub fn reduce_into(acc: &mut [u8], src: &[u8], dtype: DType, op: ReduceOp) {
    let f32_max = |x: f32, y: f32| {
        if x.is_nan() || y.is_nan() {
            f32::NAN
        } else {
            x.max(y)
        }
    };
    let f64_max = |x: f64, y: f64| {
        if x.is_nan() || y.is_nan() {
            f64::NAN
        } else {
            x.max(y)
        }
    };
    match (dtype, op) {
        (DType::F32, ReduceOp::Sum) => combine(acc, src, |x: f32, y| x + y),
        (DType::F32, ReduceOp::Max) => combine(acc, src, f32_max),
        (DType::F64, ReduceOp::Sum) => combine(acc, src, |x: f64, y| x + y),
        (DType::F64, ReduceOp::Max) => combine(acc, src, f64_max),
        (DType::I64, ReduceOp::Sum) => combine(acc, src, i64::wrapping_add),
        (DType::I64, ReduceOp::Max) => combine(acc, src, i64::max),
    }
}

/// `acc[i] = f(acc[i], src[i])` over the `T`s of two byte slices: on typed
/// slices when both are aligned (the usual case; the compiler vectorizes it),
/// else element by element. The same arithmetic either way.
fn combine<T: bytemuck::Pod>(acc: &mut [u8], src: &[u8], f: impl Fn(T, T) -> T) {
    let n = std::mem::size_of::<T>();
    let whole = acc.len().min(src.len()) / n * n;
    let (acc, src) = (&mut acc[..whole], &src[..whole]);
    let aligned = |p: *const u8| p.align_offset(std::mem::align_of::<T>()) == 0;
    if aligned(acc.as_ptr()) && aligned(src.as_ptr()) {
        // Whole elements, aligned: the casts cannot fail.
        let typed: &mut [T] = bytemuck::cast_slice_mut(acc);
        for (a, &s) in typed.iter_mut().zip(bytemuck::cast_slice::<u8, T>(src)) {
            *a = f(*a, s);
        }
        return;
    }
    for (a, s) in acc.chunks_exact_mut(n).zip(src.chunks_exact(n)) {
        let r = f(
            bytemuck::pod_read_unaligned(a),
            bytemuck::pod_read_unaligned(s),
        );
        a.copy_from_slice(bytemuck::bytes_of(&r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_combine_in_order_and_max_keeps_nan() {
        let mut acc: Vec<u8> = [1.0f32, 5.0, 0.0]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let src: Vec<u8> = [2.0f32, 3.0, f32::NAN]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        reduce_into(&mut acc, &src, DType::F32, ReduceOp::Max);
        let out: Vec<f32> = acc
            .chunks_exact(4)
            .map(|c| f32::from_ne_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(out[..2], [2.0, 5.0]);
        assert!(out[2].is_nan());
        let mut acc = 7i64.to_ne_bytes().to_vec();
        reduce_into(&mut acc, &(-3i64).to_ne_bytes(), DType::I64, ReduceOp::Sum);
        assert_eq!(i64::from_ne_bytes(acc[..].try_into().unwrap()), 4);
        // Misaligned bytes take the element-by-element path: the same sums.
        let xs: Vec<u8> = [1.5f64, -2.0, 1e300]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let mut shifted = vec![0u8; 1];
        shifted.extend_from_slice(&xs);
        let mut aligned = xs.clone();
        reduce_into(&mut shifted[1..], &xs, DType::F64, ReduceOp::Sum);
        reduce_into(&mut aligned, &xs, DType::F64, ReduceOp::Sum);
        assert_eq!(shifted[1..], aligned[..]);
        let sums: Vec<f64> = aligned
            .chunks_exact(8)
            .map(|c| f64::from_ne_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(sums, [3.0, -4.0, 2e300]);
        let mut big = i64::MAX.to_ne_bytes().to_vec();
        reduce_into(&mut big, &1i64.to_ne_bytes(), DType::I64, ReduceOp::Sum);
        assert_eq!(big, i64::MIN.to_ne_bytes());
    }
}
