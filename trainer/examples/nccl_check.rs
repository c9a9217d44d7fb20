//! The NCCL engine against the TCP engine, on GPUs: every rank all-reduces,
//! broadcasts, all-gathers and reduce-scatters the same inputs through both;
//! the results must agree bit for bit. Exits non-zero on any difference.
//!
//! One process per GPU, placed by torchrun's variables (`RANK`, `WORLD_SIZE`,
//! `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`; the rendezvous is at
//! `MASTER_PORT + 1`, beside torchrun's own store); without them, one rank:
//!
//! ```text
//! cargo build --release -p neox-trainer --features cuda --example nccl_check
//! target/release/examples/nccl_check
//! torchrun --nproc-per-node 2 --no-python target/release/examples/nccl_check
//! ```

use std::sync::Arc;
use std::time::Duration;

use neox_trainer::dist::comm::nccl::NcclComm;
use neox_trainer::dist::comm::tcp::{TcpComm, TcpConfig};
use neox_trainer::dist::{CommError, CommExt, Communicator, ReduceOp};

fn var(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one engine makes of this rank's inputs.
fn run(c: &dyn Communicator) -> Result<Vec<Vec<f32>>, CommError> {
    let (r, n) = (c.rank(), c.size());
    let input = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|i| {
                ((i * 7919 + r * 104_729) % 1000) as f32 / 7.0 * if i % 3 == 0 { 1e7 } else { 1.0 }
            })
            .collect()
    };
    let mut out = Vec::new();
    let mut v = input(1 << 20);
    c.all_reduce_f32(&mut v, ReduceOp::Sum)?;
    out.push(v);
    let mut v = input(1001);
    c.all_reduce_f32(&mut v, ReduceOp::Max)?;
    out.push(v);
    let mut v = input(17);
    c.broadcast_f32(&mut v, n - 1)?;
    out.push(v);
    let counts: Vec<usize> = (0..n).map(|q| q % 3 + 1).collect();
    let mut all = vec![0f32; counts.iter().sum()];
    c.all_gather_f32(&input(counts[r]), &mut all, &counts)?;
    out.push(all);
    let mut part = vec![0f32; counts[r]];
    c.reduce_scatter_f32(
        &input(counts.iter().sum()),
        &mut part,
        &counts,
        ReduceOp::Sum,
    )?;
    out.push(part);
    c.barrier()?;
    Ok(out)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tcp: Arc<dyn Communicator> = Arc::new(TcpComm::connect(TcpConfig {
        rank: var("RANK", 0),
        world: var("WORLD_SIZE", 1),
        master_addr: std::env::var("MASTER_ADDR").unwrap_or_else(|_| "127.0.0.1".into()),
        master_port: var("MASTER_PORT", 29500) as u16 + 1,
        timeout: Duration::from_secs(120),
    })?);
    let nccl = NcclComm::new(tcp.clone(), var("LOCAL_RANK", 0))?;
    let (want, got) = (run(tcp.as_ref())?, run(&nccl)?);
    let same = want.iter().zip(&got).all(|(a, b)| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    });
    println!(
        "rank {} of {}: NCCL and TCP {}",
        tcp.rank(),
        tcp.size(),
        if same { "agree bit for bit" } else { "DIFFER" }
    );
    if !same {
        return Err("NCCL and TCP results differ".into());
    }
    Ok(())
}
