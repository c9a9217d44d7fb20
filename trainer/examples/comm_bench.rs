//! All-reduce throughput of the thread and TCP engines on 2 ranks.
//!
//! `cargo run --release -p neox-trainer --example comm_bench -- [MB] [REPEATS]`
//! (default 100 MB of f32, 3 repeats). Prints the buffer size divided by the
//! time of one all-reduce (the slowest rank's), in MB/s.

use std::net::TcpListener;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use neox_trainer::dist::comm::tcp::{TcpComm, TcpConfig};
use neox_trainer::dist::comm::threads::ThreadComm;
use neox_trainer::dist::{CommExt, Communicator, ReduceOp};

const RANKS: usize = 2;

/// Seconds of the fastest repeat on one rank.
fn time(c: &dyn Communicator, elements: usize, repeats: usize) -> f64 {
    let mut buf = vec![c.rank() as f32 + 1.0; elements];
    c.all_reduce_f32(&mut buf, ReduceOp::Sum)
        .expect("all-reduce failed");
    (0..repeats)
        .map(|_| {
            c.barrier().expect("barrier failed");
            let start = Instant::now();
            c.all_reduce_f32(&mut buf, ReduceOp::Sum)
                .expect("all-reduce failed");
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn report(engine: &str, mb: f64, secs: Vec<f64>) {
    let slowest = secs.iter().copied().fold(0.0, f64::max);
    println!(
        "{engine}: all-reduce of {mb:.0} MB f32 on {RANKS} ranks: {:.3} s, {:.0} MB/s",
        slowest,
        mb / slowest
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mb: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100.0);
    let repeats: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let elements = (mb * 1e6 / 4.0) as usize;
    let timeout = Duration::from_secs(120);

    let threads: Vec<_> = ThreadComm::group(RANKS, timeout)
        .into_iter()
        .map(|c| thread::spawn(move || time(&c, elements, repeats)))
        .collect();
    report(
        "threads",
        mb,
        threads
            .into_iter()
            .map(|h| h.join().expect("rank panicked"))
            .collect(),
    );

    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("no free port")
        .port();
    let ranks: Vec<_> = (0..RANKS)
        .map(|rank| {
            thread::spawn(move || {
                let c = Arc::new(
                    TcpComm::connect(TcpConfig {
                        rank,
                        world: RANKS,
                        master_addr: "127.0.0.1".into(),
                        master_port: port,
                        timeout,
                    })
                    .expect("rendezvous failed"),
                );
                time(c.as_ref(), elements, repeats)
            })
        })
        .collect();
    report(
        "tcp (127.0.0.1)",
        mb,
        ranks
            .into_iter()
            .map(|h| h.join().expect("rank panicked"))
            .collect(),
    );
}
