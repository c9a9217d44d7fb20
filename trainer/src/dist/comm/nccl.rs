//! Ranks as GPUs, one process each, talking through NCCL (cudarc's `nccl`).
//!
//! A control communicator (normally a [`super::tcp::TcpComm`]) hands rank
//! 0's NCCL id to the others and the ids of sub-groups to their members.
//!
//! This engine implements the byte-level [`Communicator`] on host buffers by
//! staging them through device memory: NCCL moves the bytes between GPUs and
//! the host combines contributions with [`reduce_into`] in rank order, so the
//! results equal the thread and TCP engines bit for bit (NCCL's own
//! reductions use an order of their own). That proves the transport and the
//! id exchange; collectives on device buffers without the host round trip are
//! the efficient path and come later.
//!
//! Every call waits for its NCCL work at most the timeout, polling an event;
//! past it the NCCL communicator is aborted (this engine is unusable after)
//! and a barrier on the control communicator names the rank that is gone or
//! silent. `ncclCommInitRank` (in [`NcclComm::new`] and sub-groups) has no
//! timeout of ours: NCCL's bootstrap bounds it.
//!
//! Unlike the thread and TCP engines, whose `send` returns once the bytes are
//! queued, an NCCL `send` returns when the peer has received them: two ranks
//! that both send before they receive wait for each other until the timeout.

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DriverError};
use cudarc::nccl::{self, Comm, Id, result::NcclError};

use super::args::{self, even_split, ranges};
use super::{CommError, Communicator, DType, ReduceOp, reduce_into};

/// A rank of a group of GPUs; see the module docs.
pub struct NcclComm {
    comm: Mutex<Option<Held>>,
    stream: Arc<CudaStream>,
    control: Arc<dyn Communicator>,
    rank: usize,
    size: usize,
    timeout: Duration,
}

/// An NCCL communicator, used by one thread at a time (behind the mutex).
struct Held(Comm);

// SAFETY: an NCCL communicator may be used from any thread as long as calls
// on it do not overlap; `NcclComm` only reaches it through a `Mutex`.
unsafe impl Send for Held {}

fn driver(during: &'static str) -> impl Fn(DriverError) -> CommError {
    move |e| CommError::Other(format!("CUDA error during {during}: {e}"))
}

fn nccl_error(during: &'static str) -> impl Fn(NcclError) -> CommError {
    move |e| CommError::Other(format!("NCCL error during {during}: {:?}", e.0))
}

impl NcclComm {
    /// Joins the NCCL communicator of `control`'s group on GPU `device` (the
    /// ordinal, usually the local rank). Collective over `control`: rank 0
    /// makes the NCCL id and broadcasts it.
    pub fn new(control: Arc<dyn Communicator>, device: usize) -> Result<NcclComm, CommError> {
        const DURING: &str = "NCCL setup";
        let ctx = CudaContext::new(device).map_err(driver(DURING))?;
        let stream = ctx.new_stream().map_err(driver(DURING))?;
        NcclComm::on_stream(control, stream)
    }

    fn on_stream(
        control: Arc<dyn Communicator>,
        stream: Arc<CudaStream>,
    ) -> Result<NcclComm, CommError> {
        const DURING: &str = "NCCL setup";
        let mut id = [0u8; 128];
        if control.rank() == 0 {
            let made = Id::new().map_err(nccl_error(DURING))?;
            for (b, &c) in id.iter_mut().zip(made.internal()) {
                *b = c as u8;
            }
        }
        control.broadcast(&mut id, 0)?;
        let id = Id::uninit(id.map(|b| b as std::ffi::c_char));
        let comm = Comm::from_rank(stream.clone(), control.rank(), control.size(), id)
            .map_err(nccl_error(DURING))?;
        Ok(NcclComm {
            comm: Mutex::new(Some(Held(comm))),
            stream,
            rank: control.rank(),
            size: control.size(),
            timeout: control.timeout(),
            control,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<Held>> {
        self.comm.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `enqueue` on the communicator, then waits for the stream.
    fn run(
        &self,
        during: &'static str,
        enqueue: impl FnOnce(&Comm) -> Result<(), CommError>,
    ) -> Result<(), CommError> {
        let mut held = self.lock();
        let Some(Held(comm)) = held.as_ref() else {
            return Err(CommError::Other(format!(
                "{during}: this NCCL communicator was aborted after an earlier failure"
            )));
        };
        enqueue(comm)?;
        let event = self.stream.record_event(None).map_err(driver(during))?;
        let start = Instant::now();
        while !event.try_is_complete().map_err(driver(during))? {
            if start.elapsed() > self.timeout {
                // Frees the GPUs of the stuck operation; then ask who is gone.
                drop(held.take());
                return Err(match self.control.barrier() {
                    Err(e) => e,
                    Ok(()) => CommError::Other(format!(
                        "NCCL {during} did not finish within {:?} though every rank is alive",
                        self.timeout
                    )),
                });
            }
            thread::sleep(Duration::from_micros(100));
        }
        Ok(())
    }

    fn to_device(&self, bytes: &[u8], during: &'static str) -> Result<CudaSlice<u8>, CommError> {
        self.stream.clone_htod(bytes).map_err(driver(during))
    }

    fn zeros(&self, len: usize, during: &'static str) -> Result<CudaSlice<u8>, CommError> {
        self.stream.alloc_zeros(len).map_err(driver(during))
    }

    fn to_host(
        &self,
        dev: &CudaSlice<u8>,
        out: &mut [u8],
        during: &'static str,
    ) -> Result<(), CommError> {
        self.stream.memcpy_dtoh(dev, out).map_err(driver(during))?;
        self.stream.synchronize().map_err(driver(during))
    }

    /// Every rank sends `parts[p]` of `send` to rank p and receives `len`
    /// bytes from every other rank; returns them by rank (own part `None`).
    fn exchange(
        &self,
        send: &[u8],
        parts: &[std::ops::Range<usize>],
        len_from: impl Fn(usize) -> usize,
        during: &'static str,
    ) -> Result<Vec<Option<Vec<u8>>>, CommError> {
        let staged = self.to_device(send, during)?;
        let peers: Vec<usize> = (0..self.size).filter(|&p| p != self.rank).collect();
        let mut incoming: Vec<Option<CudaSlice<u8>>> = (0..self.size).map(|_| None).collect();
        for &p in &peers {
            if len_from(p) > 0 {
                incoming[p] = Some(self.zeros(len_from(p), during)?);
            }
        }
        self.run(during, |comm| {
            nccl::result::group_start().map_err(nccl_error(during))?;
            let mut queued = Ok(());
            for &p in &peers {
                let part = parts[p].clone();
                if !part.is_empty() {
                    let view = staged.slice(part);
                    queued = queued.and(comm.send(&view, p as i32).map_err(nccl_error(during)));
                }
                if let Some(buf) = incoming[p].as_mut() {
                    queued = queued.and(
                        comm.recv(buf, p as i32)
                            .map(|_| ())
                            .map_err(nccl_error(during)),
                    );
                }
            }
            // The group must be closed even when queueing failed.
            let ended = nccl::result::group_end()
                .map(|_| ())
                .map_err(nccl_error(during));
            queued.and(ended)
        })?;
        let mut out: Vec<Option<Vec<u8>>> = (0..self.size).map(|_| None).collect();
        for &p in &peers {
            let mut host = vec![0u8; len_from(p)];
            if let Some(buf) = &incoming[p] {
                self.to_host(buf, &mut host, during)?;
            }
            out[p] = Some(host);
        }
        Ok(out)
    }
}

impl Communicator for NcclComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn all_reduce(&self, buf: &mut [u8], dtype: DType, op: ReduceOp) -> Result<(), CommError> {
        const DURING: &str = "all_reduce";
        args::whole(buf.len(), dtype, DURING)?;
        if self.size == 1 {
            return Ok(());
        }
        let counts: Vec<usize> = even_split(buf.len() / dtype.size(), self.size)
            .into_iter()
            .map(|c| c * dtype.size())
            .collect();
        let mine = ranges(&counts)[self.rank].clone();
        let mut reduced = vec![0u8; mine.len()];
        self.reduce_scatter(buf, &mut reduced, &counts, dtype, op)?;
        self.all_gather(&reduced, buf, &counts)
    }

    fn broadcast(&self, buf: &mut [u8], root: usize) -> Result<(), CommError> {
        const DURING: &str = "broadcast";
        args::root(root, self.size, DURING)?;
        if buf.is_empty() || self.size == 1 {
            return Ok(());
        }
        let mut dev = self.to_device(buf, DURING)?;
        self.run(DURING, |comm| {
            comm.broadcast_in_place(&mut dev, root as i32)
                .map(|_| ())
                .map_err(nccl_error(DURING))
        })?;
        self.to_host(&dev, buf, DURING)
    }

    fn all_gather(&self, send: &[u8], recv: &mut [u8], counts: &[usize]) -> Result<(), CommError> {
        const DURING: &str = "all_gather";
        args::counts(counts, self.rank, self.size, recv.len(), send.len(), DURING)?;
        let slices = ranges(counts);
        let everything = vec![0..send.len(); self.size];
        let parts = self.exchange(send, &everything, |p| counts[p], DURING)?;
        recv[slices[self.rank].clone()].copy_from_slice(send);
        for (p, part) in parts.into_iter().enumerate() {
            if let Some(part) = part {
                recv[slices[p].clone()].copy_from_slice(&part);
            }
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
        args::counts(counts, self.rank, self.size, send.len(), recv.len(), DURING)?;
        for &c in counts {
            args::whole(c, dtype, DURING)?;
        }
        let slices = ranges(counts);
        let mine = slices[self.rank].clone();
        let parts = self.exchange(send, &slices, |_| mine.len(), DURING)?;
        for (r, part) in parts.iter().enumerate() {
            let part = part.as_deref().unwrap_or(&send[mine.clone()]);
            if r == 0 {
                recv.copy_from_slice(part);
            } else {
                reduce_into(recv, part, dtype, op);
            }
        }
        Ok(())
    }

    fn all_to_all(&self, send: &[u8], recv: &mut [u8]) -> Result<(), CommError> {
        const DURING: &str = "all_to_all";
        let part = args::parts(send.len(), recv.len(), self.size, DURING)?;
        let at = |r: usize| r * part..(r + 1) * part;
        let slices: Vec<_> = (0..self.size).map(at).collect();
        let parts = self.exchange(send, &slices, |_| part, DURING)?;
        recv[at(self.rank)].copy_from_slice(&send[at(self.rank)]);
        for (p, data) in parts.into_iter().enumerate() {
            if let Some(data) = data {
                recv[at(p)].copy_from_slice(&data);
            }
        }
        Ok(())
    }

    fn send(&self, buf: &[u8], to: usize) -> Result<(), CommError> {
        const DURING: &str = "send";
        args::peer(to, self.rank, self.size, DURING)?;
        if buf.is_empty() {
            return Ok(());
        }
        let dev = self.to_device(buf, DURING)?;
        self.run(DURING, |comm| {
            comm.send(&dev, to as i32).map_err(nccl_error(DURING))
        })
    }

    fn recv(&self, buf: &mut [u8], from: usize) -> Result<(), CommError> {
        const DURING: &str = "recv";
        args::peer(from, self.rank, self.size, DURING)?;
        if buf.is_empty() {
            return Ok(());
        }
        let mut dev = self.zeros(buf.len(), DURING)?;
        self.run(DURING, |comm| {
            comm.recv(&mut dev, from as i32)
                .map(|_| ())
                .map_err(nccl_error(DURING))
        })?;
        self.to_host(&dev, buf, DURING)
    }

    fn barrier(&self) -> Result<(), CommError> {
        const DURING: &str = "barrier";
        let mut dev = self.zeros(1, DURING)?;
        self.run(DURING, |comm| {
            comm.all_reduce_in_place(&mut dev, &nccl::ReduceOp::Sum)
                .map(|_| ())
                .map_err(nccl_error(DURING))
        })
    }

    fn sub_group(&self, ranks: &[usize]) -> Result<Arc<dyn Communicator>, CommError> {
        let control = self.control.sub_group(ranks)?;
        Ok(Arc::new(NcclComm::on_stream(control, self.stream.clone())?))
    }
}
