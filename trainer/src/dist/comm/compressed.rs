//! DeepSpeed's compressed all-reduce (`NcclBackend.compressed_allreduce`,
//! the exchange of 1-bit Adam's momentum): each tensor travels as one sign
//! bit per element plus one f32 scale, twice, with the rounding error of each
//! compression fed back into the next call.
//!
//! For each tensor of `n` elements, padded with zeros to `c` elements (a
//! multiple of `ranks x lcm(ranks, 8)`, DeepSpeed's `corrected_tensor_size`),
//! cut into `ranks` chunks of `c / ranks`:
//!
//! 1. Worker: `x = values + worker_error`; `scale = ||x|| / sqrt(c)`;
//!    `sign = +1 where x >= 0 (or NaN), else -1`; `worker_error = x - scale * sign`.
//!    Chunk r of the signs (packed 8 per byte, first element in the high bit,
//!    as numpy's `packbits`) goes to rank r, with the scale (all-to-all).
//! 2. Server (rank r, for chunk r): `y = sum over ranks j, in rank order, of
//!    sign_j * (scale_j * (1 / ranks)) + server_error`; `scale' = ||y|| /
//!    sqrt(c / ranks)`; `server_error = y - scale' * sign(y)`; the signs and
//!    `scale'` go to every rank (all-gather).
//! 3. Every rank: `values = sign' * scale'` chunk by chunk, cut back to `n`.
//!
//! Every rank ends with the same values, about the mean of the ranks' inputs.
//! Norms are summed in f64 and the scale rounded to f32 once; the rest is f32
//! as in DeepSpeed. All tensors of a call travel together: one all-to-all and
//! one all-gather per call (DeepSpeed makes one pair per tensor; the numbers
//! are the same). A rank sends about `c / 8 x (1 + 1 / ranks)` bytes per
//! tensor, where an f32 all-reduce hands over `4 n`.

use super::{CommError, Communicator};

const DURING: &str = "compressed all-reduce";

/// Elements a tensor of `len` is padded to for `ranks` ranks.
pub fn padded_len(len: usize, ranks: usize) -> usize {
    let ranks = ranks.max(1);
    let unit = ranks * lcm(ranks, 8);
    len.div_ceil(unit) * unit
}

fn lcm(a: usize, b: usize) -> usize {
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    a / gcd(a, b) * b
}

/// One tensor's compression errors on one rank, carried from call to call.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorFeedback {
    /// The worker's error over the padded tensor.
    pub worker: Vec<f32>,
    /// The server's error over the chunk this rank serves.
    pub server: Vec<f32>,
}

impl ErrorFeedback {
    /// Zero errors for a tensor of `len` elements among `ranks` ranks.
    pub fn new(len: usize, ranks: usize) -> Self {
        let padded = padded_len(len, ranks);
        ErrorFeedback {
            worker: vec![0.0; padded],
            server: vec![0.0; padded / ranks.max(1)],
        }
    }

    /// Whether these are errors of a tensor of `len` among `ranks`.
    pub fn fits(&self, len: usize, ranks: usize) -> bool {
        let padded = padded_len(len, ranks);
        self.worker.len() == padded && self.server.len() == padded / ranks.max(1)
    }
}

/// A tensor to exchange and its errors.
pub struct CompressedTensor<'a> {
    pub values: &'a mut [f32],
    pub errors: &'a mut ErrorFeedback,
}

/// Replaces every tensor's `values` on every rank by the compressed mean of
/// all ranks' `values` (see the module docs), updating the errors. Collective:
/// every rank passes tensors of the same lengths in the same order.
pub fn compressed_all_reduce(
    comm: &dyn Communicator,
    tensors: &mut [CompressedTensor<'_>],
) -> Result<(), CommError> {
    let ranks = comm.size();
    for (t, tensor) in tensors.iter().enumerate() {
        if !tensor.errors.fits(tensor.values.len(), ranks) {
            return Err(CommError::Mismatch {
                during: DURING,
                message: format!(
                    "tensor {t} has {} values but errors of {} and {} (made for another \
                     size or number of ranks)",
                    tensor.values.len(),
                    tensor.errors.worker.len(),
                    tensor.errors.server.len()
                ),
            });
        }
    }
    // One message per destination: every tensor's scale, then each tensor's
    // chunk of sign bytes.
    let chunk_bytes: Vec<usize> = tensors
        .iter()
        .map(|t| t.errors.worker.len() / ranks / 8)
        .collect();
    let scales_len = 4 * tensors.len();
    let part = scales_len + chunk_bytes.iter().sum::<usize>();
    let offsets: Vec<usize> = chunk_bytes
        .iter()
        .scan(scales_len, |at, &n| {
            *at += n;
            Some(*at - n)
        })
        .collect();

    // 1. Workers compress.
    let mut send = vec![0u8; ranks * part];
    for (t, tensor) in tensors.iter_mut().enumerate() {
        let worker = &mut tensor.errors.worker;
        for (e, &v) in worker.iter_mut().zip(tensor.values.iter()) {
            *e += v;
        }
        let (scale, bits) = compress(worker);
        for r in 0..ranks {
            let at = r * part;
            send[at + 4 * t..at + 4 * t + 4].copy_from_slice(&scale.to_le_bytes());
            let chunk = &bits[r * chunk_bytes[t]..(r + 1) * chunk_bytes[t]];
            send[at + offsets[t]..at + offsets[t] + chunk_bytes[t]].copy_from_slice(chunk);
        }
    }
    let mut received = vec![0u8; ranks * part];
    comm.all_to_all(&send, &mut received)?;
    drop(send);

    // 2. This rank serves its chunk of every tensor.
    let weight = (1.0 / ranks as f64) as f32;
    let mut served = vec![0u8; part];
    for (t, tensor) in tensors.iter_mut().enumerate() {
        let server = &mut tensor.errors.server;
        let mut sum = vec![0f32; server.len()];
        for j in 0..ranks {
            let from = &received[j * part..(j + 1) * part];
            let scale = read_f32(from, 4 * t) * weight;
            let bits = &from[offsets[t]..offsets[t] + chunk_bytes[t]];
            for (i, s) in sum.iter_mut().enumerate() {
                let term = signed(bits, i, scale);
                *s = if j == 0 { term } else { *s + term };
            }
        }
        for (e, s) in server.iter_mut().zip(&sum) {
            *e += s;
        }
        let (scale, bits) = compress(server);
        served[4 * t..4 * t + 4].copy_from_slice(&scale.to_le_bytes());
        served[offsets[t]..offsets[t] + chunk_bytes[t]].copy_from_slice(&bits);
    }
    drop(received);
    let mut gathered = vec![0u8; ranks * part];
    comm.all_gather(&served, &mut gathered, &vec![part; ranks])?;

    // 3. Every rank decompresses every chunk.
    for (t, tensor) in tensors.iter_mut().enumerate() {
        let chunk = chunk_bytes[t] * 8;
        for r in 0..ranks {
            let from = &gathered[r * part..(r + 1) * part];
            let scale = read_f32(from, 4 * t);
            let bits = &from[offsets[t]..offsets[t] + chunk_bytes[t]];
            let start = (r * chunk).min(tensor.values.len());
            let end = ((r + 1) * chunk).min(tensor.values.len());
            for (i, v) in tensor.values[start..end].iter_mut().enumerate() {
                *v = signed(bits, i, scale);
            }
        }
    }
    Ok(())
}

/// Compresses `x` in place into its error: returns `||x|| / sqrt(len)` and
/// the packed signs, and leaves `x - scale * sign` in `x`.
fn compress(x: &mut [f32]) -> (f32, Vec<u8>) {
    let scale = match x.len() {
        0 => 0.0,
        n => {
            let squares: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
            (squares.sqrt() / (n as f64).sqrt()) as f32
        }
    };
    let mut bits = vec![0u8; x.len().div_ceil(8)];
    for (i, v) in x.iter_mut().enumerate() {
        let positive = v.is_nan() || *v >= 0.0;
        if positive {
            bits[i / 8] |= 0x80 >> (i % 8);
            *v -= scale;
        } else {
            *v += scale;
        }
    }
    (scale, bits)
}

/// `+scale` or `-scale` as bit `i` of `bits` says.
fn signed(bits: &[u8], i: usize, scale: f32) -> f32 {
    if bits[i / 8] & (0x80 >> (i % 8)) != 0 {
        scale
    } else {
        -scale
    }
}

fn read_f32(bytes: &[u8], at: usize) -> f32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    f32::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::dist::comm::threads::ThreadComm;

    /// Runs `calls` successive compressed all-reduces of `inputs[call][rank]`
    /// (tensors of `lens`) on threads; returns every rank's outputs per call
    /// and its final errors.
    #[allow(clippy::type_complexity)]
    fn on_threads(
        lens: &[usize],
        inputs: &[Vec<Vec<Vec<f32>>>],
    ) -> Vec<(Vec<Vec<Vec<f32>>>, Vec<ErrorFeedback>)> {
        let ranks = inputs[0].len();
        let comms = ThreadComm::group(ranks, Duration::from_secs(20));
        std::thread::scope(|s| {
            let handles: Vec<_> = comms
                .into_iter()
                .map(|c| {
                    s.spawn(move || {
                        let c: Arc<dyn Communicator> = Arc::new(c);
                        let r = c.rank();
                        let mut errors: Vec<ErrorFeedback> =
                            lens.iter().map(|&n| ErrorFeedback::new(n, ranks)).collect();
                        let mut outputs = Vec::new();
                        for call in inputs {
                            let mut values = call[r].clone();
                            let mut tensors: Vec<CompressedTensor> = values
                                .iter_mut()
                                .zip(errors.iter_mut())
                                .map(|(v, e)| CompressedTensor {
                                    values: v,
                                    errors: e,
                                })
                                .collect();
                            compressed_all_reduce(c.as_ref(), &mut tensors).unwrap();
                            outputs.push(values);
                        }
                        (outputs, errors)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// The formula of the module docs, on unpacked signs, all ranks in one
    /// loop: `values[rank]` of one tensor, `errors[rank]` updated.
    fn reference(values: &[Vec<f32>], errors: &mut [ErrorFeedback]) -> Vec<f32> {
        let ranks = values.len();
        let n = values[0].len();
        let c = padded_len(n, ranks);
        let q = c / ranks;
        let norm = |x: &[f32]| {
            let s: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum();
            (s.sqrt() / (x.len() as f64).sqrt()) as f32
        };
        let sign = |v: f32| if v < 0.0 { -1.0f32 } else { 1.0 };
        let mut worker_signs = Vec::new();
        let mut worker_scales = Vec::new();
        for (r, e) in errors.iter_mut().enumerate() {
            let x: Vec<f32> = (0..c)
                .map(|i| values[r].get(i).copied().unwrap_or(0.0) + e.worker[i])
                .collect();
            let scale = norm(&x);
            for (e, &x) in e.worker.iter_mut().zip(&x) {
                *e = x - scale * sign(x);
            }
            worker_signs.push(x.iter().map(|&v| sign(v)).collect::<Vec<_>>());
            worker_scales.push(scale);
        }
        let mut out = vec![0f32; c];
        for (server, e) in errors.iter_mut().enumerate() {
            let y: Vec<f32> = (0..q)
                .map(|i| {
                    let mut s = 0f32;
                    for j in 0..ranks {
                        let term = worker_signs[j][server * q + i]
                            * (worker_scales[j] * (1.0 / ranks as f32));
                        s = if j == 0 { term } else { s + term };
                    }
                    s + e.server[i]
                })
                .collect();
            let scale = norm(&y);
            let chunk = &mut out[server * q..(server + 1) * q];
            for ((e, o), &y) in e.server.iter_mut().zip(chunk).zip(&y) {
                *e = y - scale * sign(y);
                *o = scale * sign(y);
            }
        }
        out.truncate(n);
        out
    }

    #[test]
    fn two_ranks_give_the_formula_on_a_small_vector() {
        // 16 elements: no padding for 2 ranks (unit 2 x 8).
        let a: Vec<f32> = (0..16)
            .map(|i| if i % 3 == 0 { -1.0 } else { 1.0 })
            .collect();
        let b: Vec<f32> = (0..16).map(|i| if i < 4 { -3.0 } else { 3.0 }).collect();
        let out = on_threads(&[16], &[vec![vec![a.clone()], vec![b.clone()]]]);
        // Worker scales are 1 and 3 with no error (|x| is constant); the
        // server sums sign_a * 0.5 + sign_b * 1.5, one of {-2, -1, 1, 2}.
        let y: Vec<f32> = a
            .iter()
            .zip(&b)
            .map(|(x, z)| x * 0.5 + z / 3.0 * 1.5)
            .collect();
        let mut expected = Vec::new();
        for chunk in y.chunks(8) {
            let scale = ((chunk.iter().map(|&v| (v * v) as f64).sum::<f64>()) / 8.0).sqrt() as f32;
            expected.extend(chunk.iter().map(|&v| if v < 0.0 { -scale } else { scale }));
        }
        assert_eq!(y[..8], [-2.0, -1.0, -1.0, -2.0, 2.0, 2.0, 1.0, 2.0]);
        for (outputs, errors) in &out {
            assert_eq!(outputs[0][0], expected);
            assert!(errors[0].worker.iter().all(|&e| e == 0.0));
        }
        // Rank 0 serves the first chunk: its error is y minus what it sent.
        let server: Vec<f32> = y[..8]
            .iter()
            .zip(&expected[..8])
            .map(|(y, o)| y - o)
            .collect();
        assert_eq!(out[0].1[0].server, server);
        assert!(server.iter().any(|&e| e != 0.0));
    }

    #[test]
    fn error_feedback_carries_over_odd_sizes_and_three_ranks() {
        let lens = [5usize, 37, 1, 48];
        let value = |call: usize, rank: usize, t: usize, i: usize| {
            let x = (call * 131 + rank * 17 + t * 7 + i * 3) as f32;
            (x * 0.37).sin() * (1.0 + t as f32)
        };
        for ranks in [2usize, 3] {
            let calls = 4;
            let inputs: Vec<Vec<Vec<Vec<f32>>>> = (0..calls)
                .map(|call| {
                    (0..ranks)
                        .map(|r| {
                            lens.iter()
                                .enumerate()
                                .map(|(t, &n)| (0..n).map(|i| value(call, r, t, i)).collect())
                                .collect()
                        })
                        .collect()
                })
                .collect();
            let out = on_threads(&lens, &inputs);
            let mut errors: Vec<Vec<ErrorFeedback>> = lens
                .iter()
                .map(|&n| (0..ranks).map(|_| ErrorFeedback::new(n, ranks)).collect())
                .collect();
            for call in 0..calls {
                for (t, errs) in errors.iter_mut().enumerate() {
                    let values: Vec<Vec<f32>> =
                        (0..ranks).map(|r| inputs[call][r][t].clone()).collect();
                    let expected = reference(&values, errs);
                    for (r, (outputs, _)) in out.iter().enumerate() {
                        assert_eq!(
                            outputs[call][t], expected,
                            "ranks {ranks}, call {call}, tensor {t}, rank {r}"
                        );
                    }
                }
            }
            for (r, (_, errs)) in out.iter().enumerate() {
                for t in 0..lens.len() {
                    assert_eq!(errs[t], errors[t][r], "ranks {ranks}, rank {r}, tensor {t}");
                }
            }
            // The errors changed what later calls gave: without them, the
            // last call compresses its inputs afresh and differs.
            let fresh = on_threads(&lens, &inputs[calls - 1..]);
            assert_ne!(fresh[0].0[0], out[0].0[calls - 1]);
        }
    }

    #[test]
    fn padding_follows_deepspeed() {
        // corrected_tensor_size: a multiple of ranks x lcm(ranks, 8).
        assert_eq!(padded_len(5, 2), 16);
        assert_eq!(padded_len(16, 2), 16);
        assert_eq!(padded_len(17, 2), 32);
        assert_eq!(padded_len(1, 3), 72);
        assert_eq!(padded_len(0, 3), 0);
        assert_eq!(padded_len(9, 1), 16);
        assert_eq!(padded_len(100, 4), 128);
    }

    #[test]
    fn errors_of_another_shape_are_refused() {
        let comms = ThreadComm::group(1, Duration::from_secs(5));
        let c = &comms[0];
        let mut values = vec![1.0f32; 9];
        let mut errors = ErrorFeedback::new(8, 1);
        let err = compressed_all_reduce(
            c,
            &mut [CompressedTensor {
                values: &mut values,
                errors: &mut errors,
            }],
        )
        .unwrap_err();
        assert!(err.to_string().contains("tensor 0 has 9 values"), "{err}");
    }
}
