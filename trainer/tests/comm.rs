//! The communicator engines against a serial computation: every collective
//! on 1 to 4 ranks, as threads and as TCP connections on 127.0.0.1 (the two
//! bit for bit equal), sub-groups, and ranks that die or never come.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use neox_trainer::dist::comm::tcp::{TcpComm, TcpConfig};
use neox_trainer::dist::comm::threads::ThreadComm;
use neox_trainer::dist::{CommError, CommExt, Communicator, DType, ReduceOp};

const LONG: Duration = Duration::from_secs(20);

/// Runs `f` on `n` thread ranks; results in rank order.
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
            thread::spawn(move || f(c))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// A port that is free now, below Linux's ephemeral range (32768+) so that no
/// outgoing connection of a parallel test can take it before it is bound, and
/// never handed out twice in this process.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    loop {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000
            + ((std::process::id() as u16)
                .wrapping_mul(97)
                .wrapping_add(step)
                % 12_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 1)).is_ok()
        {
            return port;
        }
    }
}

fn config(rank: usize, world: usize, port: u16, timeout: Duration) -> TcpConfig {
    TcpConfig {
        rank,
        world,
        master_addr: "127.0.0.1".into(),
        master_port: port,
        timeout,
    }
}

/// Runs `f` on `n` TCP ranks (one thread each, connected through sockets).
fn on_tcp<T: Send + 'static>(
    n: usize,
    timeout: Duration,
    f: impl Fn(TcpComm) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let port = free_port();
    let f = Arc::new(f);
    let handles: Vec<_> = (0..n)
        .map(|rank| {
            let f = f.clone();
            thread::spawn(move || f(TcpComm::connect(config(rank, n, port, timeout)).unwrap()))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Rank `r`'s `len` values, of mixed magnitudes so that the order of a sum shows.
fn floats(r: usize, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let x = ((i * 7919 + r * 104_729) % 1000) as f32 / 7.0 - 60.0;
            if (i + r).is_multiple_of(3) {
                x * 1e7
            } else {
                x
            }
        })
        .collect()
}

fn bytes<T: bytemuck::Pod>(v: &[T]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

/// The byte counts of rank r's part in the uneven layouts below.
fn uneven(n: usize) -> Vec<usize> {
    (0..n).map(|r| [3, 0, 5, 1][r % 4] * 4).collect()
}

/// Every collective, on deterministic inputs; what each call left, in order.
fn exercise(c: &dyn Communicator) -> Vec<Vec<u8>> {
    let (r, n) = (c.rank(), c.size());
    let mut out = Vec::new();
    for len in [1001, 2, 0] {
        let mut v = floats(r, len);
        c.all_reduce_f32(&mut v, ReduceOp::Sum).unwrap();
        out.push(bytes(&v));
    }
    let mut v = floats(r, 37);
    v[5] = if r == n - 1 { f32::NAN } else { 1.0 };
    c.all_reduce_f32(&mut v, ReduceOp::Max).unwrap();
    out.push(bytes(&v));
    let mut v: Vec<f64> = floats(r, 19).iter().map(|&x| f64::from(x) / 3.0).collect();
    c.all_reduce_f64(&mut v, ReduceOp::Sum).unwrap();
    out.push(bytes(&v));
    for op in [ReduceOp::Sum, ReduceOp::Max] {
        let mut v: Vec<i64> = (0..9).map(|i| (i * 31 + r as i64 * 17) % 23 - 11).collect();
        c.all_reduce(bytemuck::cast_slice_mut(&mut v), DType::I64, op)
            .unwrap();
        out.push(bytes(&v));
    }
    for root in 0..n {
        let mut v = floats(r, 11);
        c.broadcast_f32(&mut v, root).unwrap();
        out.push(bytes(&v));
    }
    let counts = uneven(n);
    let mine: Vec<u8> = (0..counts[r]).map(|i| (r * 50 + i) as u8).collect();
    let mut all = vec![0u8; counts.iter().sum()];
    c.all_gather(&mine, &mut all, &counts).unwrap();
    out.push(all);
    let elems: Vec<usize> = counts.iter().map(|b| b / 4).collect();
    let send = floats(r, elems.iter().sum());
    let mut part = vec![0f32; elems[r]];
    c.reduce_scatter_f32(&send, &mut part, &elems, ReduceOp::Sum)
        .unwrap();
    out.push(bytes(&part));
    // Part p of rank r's buffer goes to rank p.
    let send: Vec<u8> = (0..n).flat_map(|p| [(r * 16 + p) as u8; 3]).collect();
    let mut recv = vec![0u8; send.len()];
    c.all_to_all(&send, &mut recv).unwrap();
    out.push(recv);
    if n > 1 {
        // Two messages around a ring, then one back: they arrive in order.
        let (next, prev) = ((r + 1) % n, (r + n - 1) % n);
        c.send(&[r as u8, 1], next).unwrap();
        c.send(&[r as u8, 2, 2], next).unwrap();
        let (mut a, mut b) = ([0u8; 2], [0u8; 3]);
        c.recv(&mut a, prev).unwrap();
        c.recv(&mut b, prev).unwrap();
        out.push([&a[..], &b[..]].concat());
    }
    c.barrier().unwrap();
    let mut message = if r == 0 {
        b"hello".to_vec()
    } else {
        Vec::new()
    };
    c.broadcast_vec(&mut message, 0).unwrap();
    out.push(message);
    out
}

/// What `exercise` must leave at rank `r` of `n`, computed serially.
fn expected(r: usize, n: usize) -> Vec<Vec<u8>> {
    let fold_f32 = |parts: Vec<Vec<f32>>, op: fn(f32, f32) -> f32| {
        let mut acc = parts[0].clone();
        for p in &parts[1..] {
            for (a, &x) in acc.iter_mut().zip(p) {
                *a = op(*a, x);
            }
        }
        acc
    };
    let sum = |a: f32, b: f32| a + b;
    let max = |a: f32, b: f32| {
        if a.is_nan() || b.is_nan() {
            f32::NAN
        } else {
            a.max(b)
        }
    };
    let mut out = Vec::new();
    for len in [1001, 2, 0] {
        out.push(bytes(&fold_f32(
            (0..n).map(|q| floats(q, len)).collect(),
            sum,
        )));
    }
    let maxed = (0..n)
        .map(|q| {
            let mut v = floats(q, 37);
            v[5] = if q == n - 1 { f32::NAN } else { 1.0 };
            v
        })
        .collect();
    out.push(bytes(&fold_f32(maxed, max)));
    let mut acc = vec![0f64; 19];
    for q in 0..n {
        for (i, &x) in floats(q, 19).iter().enumerate() {
            acc[i] = if q == 0 {
                f64::from(x) / 3.0
            } else {
                acc[i] + f64::from(x) / 3.0
            };
        }
    }
    out.push(bytes(&acc));
    let ints =
        |q: usize| -> Vec<i64> { (0..9).map(|i| (i * 31 + q as i64 * 17) % 23 - 11).collect() };
    out.push(bytes(
        &(0..9)
            .map(|i| (0..n).map(|q| ints(q)[i]).sum::<i64>())
            .collect::<Vec<_>>(),
    ));
    out.push(bytes(
        &(0..9)
            .map(|i| (0..n).map(|q| ints(q)[i]).max().unwrap())
            .collect::<Vec<_>>(),
    ));
    for root in 0..n {
        out.push(bytes(&floats(root, 11)));
    }
    let counts = uneven(n);
    out.push(
        (0..n)
            .flat_map(|q| (0..counts[q]).map(move |i| (q * 50 + i) as u8))
            .collect(),
    );
    let elems: Vec<usize> = counts.iter().map(|b| b / 4).collect();
    let total = fold_f32((0..n).map(|q| floats(q, elems.iter().sum())).collect(), sum);
    let start: usize = elems[..r].iter().sum();
    out.push(bytes(&total[start..start + elems[r]]));
    out.push((0..n).flat_map(|q| [(q * 16 + r) as u8; 3]).collect());
    if n > 1 {
        let prev = ((r + n - 1) % n) as u8;
        out.push(vec![prev, 1, prev, 2, 2]);
    }
    out.push(b"hello".to_vec());
    out
}

#[test]
fn threads_compute_every_collective_like_the_serial_loop() {
    for n in 1..=4 {
        let got = on_threads(n, LONG, |c| exercise(&c));
        for (r, g) in got.iter().enumerate() {
            assert_eq!(g, &expected(r, n), "rank {r} of {n}");
        }
    }
}

#[test]
fn tcp_computes_every_collective_like_the_serial_loop_and_the_threads() {
    for n in 1..=4 {
        let got = on_tcp(n, LONG, |c| exercise(&c));
        let threads = on_threads(n, LONG, |c| exercise(&c));
        for (r, g) in got.iter().enumerate() {
            assert_eq!(g, &expected(r, n), "rank {r} of {n}");
            assert_eq!(g, &threads[r], "rank {r} of {n}: TCP and threads differ");
        }
    }
}

/// An engine with the trait's own `all_to_all` (pairwise send and recv).
struct Pairwise<C>(C);

impl<C: Communicator> Communicator for Pairwise<C> {
    fn rank(&self) -> usize {
        self.0.rank()
    }
    fn size(&self) -> usize {
        self.0.size()
    }
    fn timeout(&self) -> Duration {
        self.0.timeout()
    }
    fn all_reduce(&self, buf: &mut [u8], dtype: DType, op: ReduceOp) -> Result<(), CommError> {
        self.0.all_reduce(buf, dtype, op)
    }
    fn broadcast(&self, buf: &mut [u8], root: usize) -> Result<(), CommError> {
        self.0.broadcast(buf, root)
    }
    fn all_gather(&self, send: &[u8], recv: &mut [u8], counts: &[usize]) -> Result<(), CommError> {
        self.0.all_gather(send, recv, counts)
    }
    fn reduce_scatter(
        &self,
        send: &[u8],
        recv: &mut [u8],
        counts: &[usize],
        dtype: DType,
        op: ReduceOp,
    ) -> Result<(), CommError> {
        self.0.reduce_scatter(send, recv, counts, dtype, op)
    }
    fn send(&self, buf: &[u8], to: usize) -> Result<(), CommError> {
        self.0.send(buf, to)
    }
    fn recv(&self, buf: &mut [u8], from: usize) -> Result<(), CommError> {
        self.0.recv(buf, from)
    }
    fn barrier(&self) -> Result<(), CommError> {
        self.0.barrier()
    }
    fn sub_group(&self, ranks: &[usize]) -> Result<Arc<dyn Communicator>, CommError> {
        self.0.sub_group(ranks)
    }
}

#[test]
fn the_default_all_to_all_exchanges_pairwise_and_bad_buffers_are_refused() {
    for n in 1..=4 {
        let got = on_threads(n, LONG, |c| exercise(&Pairwise(c)));
        for (r, g) in got.iter().enumerate() {
            assert_eq!(g, &expected(r, n), "rank {r} of {n}");
        }
    }
    let errors = on_threads(2, LONG, |c| {
        let engine = c.all_to_all(&[0u8; 3], &mut [0u8; 3]).unwrap_err();
        let default = Pairwise(c)
            .all_to_all(&[0u8; 4], &mut [0u8; 6])
            .unwrap_err();
        (engine.to_string(), default.to_string())
    });
    for (engine, default) in errors {
        assert!(engine.contains("2 equal parts"), "{engine}");
        assert!(default.contains("one length"), "{default}");
    }
}

/// A 2 x 2 grid (rank = row * 2 + col): rows and columns reduce by turns,
/// with point-to-point messages on the rows in between.
fn grid(c: &dyn Communicator) -> Vec<f64> {
    let (row, col) = (c.rank() / 2, c.rank() % 2);
    let rows = c.sub_group(&[row * 2, row * 2 + 1]).unwrap();
    let cols = c.sub_group(&[col, col + 2]).unwrap();
    assert_eq!(
        (rows.rank(), rows.size(), cols.rank(), cols.size()),
        (col, 2, row, 2)
    );
    let mut v = vec![c.rank() as f64 + 1.0, 10.0 * c.rank() as f64];
    rows.all_reduce_f64(&mut v, ReduceOp::Sum).unwrap();
    let mut other = [0u8; 8];
    rows.send(&(c.rank() as u64).to_le_bytes(), 1 - col)
        .unwrap();
    cols.all_reduce_f64(&mut v, ReduceOp::Max).unwrap();
    rows.recv(&mut other, 1 - col).unwrap();
    rows.all_reduce_f64(&mut v, ReduceOp::Sum).unwrap();
    cols.barrier().unwrap();
    v.push(u64::from_le_bytes(other) as f64);
    v
}

#[test]
fn sub_groups_of_a_grid_reduce_by_turns() {
    // Rows: [1+2, 0+10] and [3+4, 20+30]; column max: [7, 50]; rows again: [14, 100].
    let want = |r: usize| vec![14.0, 100.0, (r ^ 1) as f64];
    for got in [
        on_threads(4, LONG, |c| grid(&c)),
        on_tcp(4, LONG, |c| grid(&c)),
    ] {
        for (r, g) in got.iter().enumerate() {
            assert_eq!(g, &want(r), "rank {r}");
        }
    }
}

#[test]
fn mismatched_calls_are_errors_not_garbage() {
    let got = on_threads(2, LONG, |c| {
        let mut v = vec![0f32; 3 + c.rank()];
        let sizes = c
            .all_reduce_f32(&mut v, ReduceOp::Sum)
            .err()
            .map(|e| e.to_string());
        let mut odd = [0u8; 6];
        let partial = c
            .all_reduce(&mut odd, DType::F32, ReduceOp::Sum)
            .unwrap_err();
        let counts = c.all_gather(&[1], &mut [0; 2], &[1]).unwrap_err();
        let outside = c.sub_group(&[1 - c.rank()]).err().map(|e| e.to_string());
        (sizes, partial.to_string(), counts.to_string(), outside)
    });
    // Rank 1's buffer is longer: it receives a shorter part than it expects.
    let sizes = &got[1].0;
    assert!(
        sizes.as_deref().is_some_and(|m| m.contains("bytes where")),
        "{sizes:?}"
    );
    let (_, partial, counts, outside) = &got[0];
    assert!(partial.contains("not a whole number of F32"), "{partial}");
    assert!(
        counts.contains("1 counts given for a group of 2"),
        "{counts}"
    );
    assert!(
        outside
            .as_deref()
            .is_some_and(|m| m.contains("is not among")),
        "{outside:?}"
    );
}

#[test]
fn a_tcp_rank_that_drops_is_lost_at_once_and_a_silent_one_times_out() {
    let timeout = Duration::from_secs(1);
    let got = on_tcp(3, timeout, move |c| {
        c.barrier().unwrap();
        match c.rank() {
            // Gone: its sockets close.
            2 => {
                drop(c);
                None
            }
            // Alive, connected, but silent.
            1 => {
                thread::sleep(timeout * 4);
                None
            }
            _ => {
                let start = Instant::now();
                let lost = c.recv(&mut [0u8; 4], 2).unwrap_err();
                let lost_after = start.elapsed();
                let start = Instant::now();
                let silent = c.recv(&mut [0u8; 4], 1).unwrap_err();
                Some((lost, lost_after, silent, start.elapsed()))
            }
        }
    });
    let (lost, lost_after, silent, silent_after) = got.into_iter().flatten().next().unwrap();
    assert!(
        matches!(lost, CommError::PeerLost { rank: 2, .. }),
        "{lost}"
    );
    assert!(lost_after < timeout, "{lost_after:?}");
    assert!(
        matches!(silent, CommError::Timeout { rank: 1, .. }),
        "{silent}"
    );
    assert!(
        silent_after >= timeout && silent_after < timeout * 3,
        "{silent_after:?}"
    );
}

/// Set in the child process of the test below: the rendezvous port.
const CHILD: &str = "NEOX_COMM_TEST_CHILD_PORT";

#[test]
fn a_killed_rank_process_is_named_by_the_others() {
    let timeout = Duration::from_secs(20);
    if let Ok(port) = std::env::var(CHILD) {
        // The child: rank 1, which joins, passes a barrier, then waits to be killed.
        let c = TcpComm::connect(config(1, 2, port.parse().unwrap(), timeout)).unwrap();
        c.barrier().unwrap();
        thread::sleep(timeout * 2);
        panic!("the child was not killed");
    }
    let port = free_port();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "a_killed_rank_process_is_named_by_the_others",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let c = TcpComm::connect(config(0, 2, port, timeout)).unwrap();
    c.barrier().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let start = Instant::now();
    let err = c.all_reduce_f32(&mut [1.0; 4], ReduceOp::Sum).unwrap_err();
    assert!(matches!(err, CommError::PeerLost { rank: 1, .. }), "{err}");
    assert!(start.elapsed() < timeout, "{:?}", start.elapsed());
    assert!(err.to_string().contains("rank 1 is gone"), "{err}");
}

#[test]
fn rendezvous_refuses_a_wrong_world_size_and_a_duplicate_rank() {
    let timeout = Duration::from_secs(10);
    let join = |rank: usize, world: usize, port: u16| {
        thread::spawn(move || {
            let start = Instant::now();
            let res = TcpComm::connect(config(rank, world, port, timeout)).map(|_| ());
            (res, start.elapsed())
        })
    };
    let port = free_port();
    let ranks = [join(0, 2, port), join(1, 3, port)];
    for h in ranks {
        let (res, took) = h.join().unwrap();
        let err = res.unwrap_err();
        assert!(matches!(err, CommError::Rendezvous { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("expects a world of 3; rank 0 expects 2"),
            "{err}"
        );
        assert!(took < timeout, "{took:?}");
    }
    let port = free_port();
    let ranks = [join(0, 3, port), join(1, 3, port), join(1, 3, port)];
    for h in ranks {
        let err = h.join().unwrap().0.unwrap_err();
        assert!(err.to_string().contains("rank 1 joined twice"), "{err}");
    }
    let err = TcpComm::connect(config(2, 2, port, timeout))
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("rank 2 is not a rank of a world of 2"),
        "{err}"
    );
}

#[test]
fn rendezvous_names_the_ranks_that_never_came() {
    let timeout = Duration::from_millis(800);
    let port = free_port();
    let late = thread::spawn(move || TcpComm::connect(config(1, 3, port, timeout * 3)).map(|_| ()));
    let err = TcpComm::connect(config(0, 3, port, timeout))
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.to_string().contains("ranks [2] did not join in time"),
        "{err}"
    );
    let err = late.join().unwrap().unwrap_err();
    assert!(
        err.to_string().contains("ranks [2] did not join in time"),
        "{err}"
    );
}
