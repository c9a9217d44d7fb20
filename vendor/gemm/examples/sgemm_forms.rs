//! GFLOP/s per CPU second of the f32 products of one GPT-NeoX 125M training
//! step (hidden 768, 4 x 128 tokens, GPT-2's vocabulary padded to 50,304),
//! each in the layout flex hands to `gemm::gemm`: a forward linear `X W`, its
//! backward forms `dY W^T` and `X^T dY`, and the attention's per-head
//! products (48 heads a step) `q k^T`, `P v` and `P^T dO`. Each form runs
//! through this crate (`new`) and through matrixmultiply called as neox's
//! first patch called it (`old`: one call per thread's block, operands as
//! given), alternating, and the two results are checked bit for bit.
//!
//!   cargo run -p gemm --example sgemm_forms                  # one thread
//!   RAYON_NUM_THREADS=2 cargo run -p gemm --example sgemm_forms -- --secs 2 out
//!
//! Arguments: `--secs S` (CPU seconds per measurement, default 1), `--rounds R`
//! (alternating old/new rounds, best kept, default 3), `--only old|new` (for
//! a profiler: one side, no comparison), then names to filter.
//! CPU time is the process's (all threads, /proc/self/task/*/schedstat), so
//! the figures hold on a loaded machine better than wall time.

use std::time::Instant;

use gemm::Parallelism;

/// One product `[m, k] x [k, n]`; `ta`/`tb`: the operand is stored transposed
/// (`A` as `[k, m]`, `B` as `[n, k]`), row-major either way. `batch`
/// independent products (flex runs them one per thread, each unthreaded).
struct Form {
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
    batch: usize,
}

const fn form(name: &'static str, (m, k, n): (usize, usize, usize), ta: bool, tb: bool) -> Form {
    Form {
        name,
        m,
        k,
        n,
        ta,
        tb,
        batch: 1,
    }
}

const fn heads(name: &'static str, (m, k, n): (usize, usize, usize), ta: bool, tb: bool) -> Form {
    Form {
        name,
        m,
        k,
        n,
        ta,
        tb,
        batch: 48,
    }
}

/// Tokens a step and the layers' (inputs, outputs).
const T: usize = 512;
const FORMS: [Form; 18] = [
    form("qkv X W", (T, 768, 2304), false, false),
    form("qkv dY W^T", (T, 2304, 768), false, true),
    form("qkv X^T dY", (768, T, 2304), true, false),
    form("attn-out X W", (T, 768, 768), false, false),
    form("attn-out dY W^T", (T, 768, 768), false, true),
    form("attn-out X^T dY", (768, T, 768), true, false),
    form("mlp-up X W", (T, 768, 3072), false, false),
    form("mlp-up dY W^T", (T, 3072, 768), false, true),
    form("mlp-up X^T dY", (768, T, 3072), true, false),
    form("mlp-down X W", (T, 3072, 768), false, false),
    form("mlp-down dY W^T", (T, 768, 3072), false, true),
    form("mlp-down X^T dY", (3072, T, 768), true, false),
    form("out X W", (T, 768, 50304), false, false),
    form("out dY W^T", (T, 50304, 768), false, true),
    form("out X^T dY", (768, T, 50304), true, false),
    heads("attn q k^T", (128, 64, 128), false, true),
    heads("attn P v", (128, 128, 64), false, false),
    heads("attn P^T dO", (128, 128, 64), true, false),
];

/// The first patch: the output cut into one block of rows or columns per
/// thread (the larger side, blocks of at least 64), one matrixmultiply call each.
#[allow(clippy::too_many_arguments)]
unsafe fn old(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    (rsa, csa): (isize, isize),
    b: *const f32,
    (rsb, csb): (isize, isize),
    c: *mut f32,
    threads: usize,
) {
    let (rows, side) = if m > n { (true, m) } else { (false, n) };
    let blocks = threads.min(side / 64).max(1);
    let size = side.div_ceil(blocks);
    let (a, b, c) = (a as usize, b as usize, c as usize);
    let block = |i: usize| {
        let (start, len) = (i * size, size.min(side - i * size));
        let (a, b, c) = (a as *const f32, b as *const f32, c as *mut f32);
        let at = start as isize;
        unsafe {
            if rows {
                let (a, c) = (a.offset(at * rsa), c.offset(at * n as isize));
                matrixmultiply::sgemm(
                    len, k, n, 1.0, a, rsa, csa, b, rsb, csb, 0.0, c, n as isize, 1,
                );
            } else {
                let (b, c) = (b.offset(at * csb), c.offset(at));
                matrixmultiply::sgemm(
                    m, k, len, 1.0, a, rsa, csa, b, rsb, csb, 0.0, c, n as isize, 1,
                );
            }
        }
    };
    use rayon::prelude::*;
    (0..side.div_ceil(size)).into_par_iter().for_each(block);
}

/// CPU time of every thread of this process, in seconds.
fn cpu_seconds() -> f64 {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task (Linux only)");
    let ns: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 * 1e-9
}

struct Rate {
    per_cpu: f64,
    per_wall: f64,
}

/// Runs `f` until `secs` CPU seconds have passed; GFLOP/s per CPU second and per wall second.
fn measure(flop: f64, secs: f64, mut f: impl FnMut()) -> Rate {
    f();
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    let mut calls = 0usize;
    while cpu_seconds() - cpu0 < secs || calls < 2 {
        f();
        calls += 1;
    }
    let (cpu, wall) = (cpu_seconds() - cpu0, wall0.elapsed().as_secs_f64());
    let work = flop * calls as f64 * 1e-9;
    Rate {
        per_cpu: work / cpu,
        per_wall: work / wall,
    }
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let (mut secs, mut rounds, mut filter, mut only) = (1.0f64, 3usize, Vec::new(), None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--secs" => {
                secs = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--secs SECONDS")
            }
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--rounds N")
            }
            "--only" => {
                only = Some(
                    args.next()
                        .filter(|s| s == "old" || s == "new")
                        .expect("--only old|new"),
                )
            }
            _ => filter.push(arg),
        }
    }
    let threads = rayon::current_num_threads();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!(
        "{threads} thread(s), load average {}; GFLOP/s per CPU second (per wall second), best of {rounds}",
        load.join(" ")
    );
    println!(
        "{:<17} {:>18} {:>4}{:>4} {:>15} {:>15} {:>6}",
        "form", "m x k x n", "A", "B", "old", "new", "new/old"
    );
    let mut totals = [0.0f64; 2];
    for f in FORMS
        .iter()
        .filter(|f| filter.is_empty() || filter.iter().any(|w| f.name.contains(w.as_str())))
    {
        let (m, k, n, batch) = (f.m, f.k, f.n, f.batch);
        let a: Vec<f32> = (0..batch * m * k)
            .map(|i| ((i * 7 + 3) % 29) as f32 * 0.125 - 1.75)
            .collect();
        let b: Vec<f32> = (0..batch * k * n)
            .map(|i| ((i * 5 + 1) % 31) as f32 * 0.0625 - 0.9)
            .collect();
        // (row stride, column stride) of the operand as the product reads it.
        let sa = if f.ta {
            (1, m as isize)
        } else {
            (k as isize, 1)
        };
        let sb = if f.tb {
            (1, k as isize)
        } else {
            (n as isize, 1)
        };
        let mut c_old = vec![0.0f32; batch * m * n];
        let mut c_new = vec![0.0f32; batch * m * n];
        let run = |c: &mut [f32], new: bool| {
            let (a, b, c) = (
                a.as_ptr() as usize,
                b.as_ptr() as usize,
                c.as_mut_ptr() as usize,
            );
            let one = |i: usize, par: Parallelism, thr: usize| unsafe {
                let a = (a as *const f32).add(i * m * k);
                let b = (b as *const f32).add(i * k * n);
                let c = (c as *mut f32).add(i * m * n);
                if new {
                    gemm::gemm(
                        m, n, k, c, 1, n as isize, false, a, sa.1, sa.0, b, sb.1, sb.0, 0.0, 1.0,
                        false, false, false, par,
                    );
                } else {
                    old(m, k, n, a, sa, b, sb, c, thr);
                }
            };
            if batch == 1 {
                one(0, Parallelism::Rayon(0), threads);
            } else {
                // flex: small products of a batch, one per thread, each unthreaded.
                use rayon::prelude::*;
                (0..batch)
                    .into_par_iter()
                    .for_each(|i| one(i, Parallelism::None, 1));
            }
        };
        let flop = 2.0 * (batch * m * k * n) as f64;
        let (mut best_old, mut best_new) = (
            Rate {
                per_cpu: 0.0,
                per_wall: 0.0,
            },
            Rate {
                per_cpu: 0.0,
                per_wall: 0.0,
            },
        );
        for _ in 0..rounds {
            if only.as_deref() != Some("new") {
                let r = measure(flop, secs, || run(&mut c_old, false));
                if r.per_cpu > best_old.per_cpu {
                    best_old = r;
                }
            }
            if only.as_deref() != Some("old") {
                let r = measure(flop, secs, || run(&mut c_new, true));
                if r.per_cpu > best_new.per_cpu {
                    best_new = r;
                }
            }
        }
        if only.is_none() {
            let same = c_old
                .iter()
                .zip(&c_new)
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{}: old and new results differ", f.name);
        }
        let shape = format!(
            "{}{m} x {k} x {n}",
            if batch > 1 {
                format!("{batch}x ")
            } else {
                String::new()
            }
        );
        let layout = |t: bool| if t { "T" } else { "N" };
        println!(
            "{:<17} {:>18} {:>4}{:>4} {:>6.1} ({:>6.1}) {:>6.1} ({:>6.1}) {:>6.2}",
            f.name,
            shape,
            layout(f.ta),
            layout(f.tb),
            best_old.per_cpu,
            best_old.per_wall,
            best_new.per_cpu,
            best_new.per_wall,
            best_new.per_cpu / best_old.per_cpu
        );
        // CPU seconds the step's share of this form takes (layers: 12 x the
        // linear forms and the attention heads; the output layer once).
        let per_step = if f.name.starts_with("out") { 1.0 } else { 12.0 };
        totals[0] += per_step * flop * 1e-9 / best_old.per_cpu;
        totals[1] += per_step * flop * 1e-9 / best_new.per_cpu;
    }
    println!(
        "CPU seconds for these forms in one step (12 layers, attention and MLP ones x12, output layer x1): old {:.2}, new {:.2}",
        totals[0], totals[1]
    );
}
