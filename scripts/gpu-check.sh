#!/usr/bin/env bash
# The GPU check, in two halves (the GPU machine has no Rust):
#
#   scripts/gpu-check.sh pack    # here: build the cuda binaries (release,
#                                # stripped) and a small char-level shard into
#                                # gpu-pack/ (ignored by git; carry it)
#   scripts/gpu-check.sh run     # on the GPU machine, from the repository root
#
# `run` prints one line per check and ends non-zero when one fails:
#   0. The Hugging Face fixtures on cuda:0 against the CPU: logits within
#      1e-3 of the largest logit (f32 kernels sum in another order), and the
#      losses (hf_device_check).
#   1. NCCL against TCP, one rank: every collective bit for bit (nccl_check).
#   2. Two ranks on the one GPU (NCCL >= 2.30 with NCCL_MULTI_RANK_GPU_ENABLE=1),
#      reported as skipped when this NCCL refuses it.
#   3. cpu-tiny on cuda:0 for 20 steps: the loss falls; ms/step.
#   4. One data-parallel step through NCCL (ZeRO-1, one rank) equals the
#      same run without any communicator: metrics.jsonl losses equal.
#   5. The 125M config at seq 2048 (micro batch 4), f32 then bf16 (f32
#      master weights): tokens/s, achieved TFLOP/s
#      (model FLOPs, ModelConfig::train_flops_per_token) and MFU against the
#      device's peak (H200 SXM: 989 dense BF16, 67 FP32 TFLOP/s; set
#      NEOX_PEAK_TFLOPS=bf16,fp32 for another device).
#   6. ZeRO-Offload (the Adam step on the host) on cpu-tiny: losses within
#      1e-4 of check 3's device optimizer (CUDA's kernels round otherwise).
# DRY_RUN=1 prints the commands `pack` would run without running them.
# Needs: libcuda.so.1, libnvrtc, CUDA headers ($CUDA_PATH/include), and a
# `libnccl.so` (pip's nvidia-nccl-cu13 ships libnccl.so.2: linked here).
set -euo pipefail
cd "$(dirname "$0")/.."
pack=gpu-pack

x() { echo "+ $*"; [ -n "${DRY_RUN:-}" ] || "$@"; }

case "${1:-}" in
pack)
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
  x cargo build --release --features cuda --bin neox-train --bin neox-data
  x cargo build --release -p neox-trainer --features cuda --example nccl_check --example hf_device_check
  x rm -rf "$pack"
  x mkdir -p "$pack"
  for b in neox-train neox-data examples/nccl_check examples/hf_device_check; do
    x cp "$CARGO_TARGET_DIR/release/$b" "$pack/"
  done
  x strip "$pack"/neox-train "$pack"/neox-data "$pack"/nccl_check "$pack"/hf_device_check
  shared="${NEOX_SHARED:-../shared}"
  x cp -r "$shared/fixtures/hf-gptneox-tiny" "$pack/hf-fixtures"
  x "$pack/neox-data" tokenize --input "$shared/data/mail.jsonl.zst" \
    --tokenizer-type CharLevelTokenizer --append-eod --max-docs 2000 \
    --output-prefix "$pack/mail"
  x du -sh "$pack"
  ;;
run)
  [ -x "$pack/neox-train" ] || { echo "error: $pack/ is missing: run 'scripts/gpu-check.sh pack' here first" >&2; exit 1; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  # A libnccl.so for cudarc's dynamic loading.
  nccl_dir="$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null || true)"
  if [ -n "$nccl_dir" ] && [ -e "$nccl_dir/libnccl.so.2" ]; then
    mkdir -p "$pack/lib" && ln -sf "$nccl_dir/libnccl.so.2" "$pack/lib/libnccl.so"
    export LD_LIBRARY_PATH="$PWD/$pack/lib:$nccl_dir:${LD_LIBRARY_PATH:-}"
  fi
  export CUDA_PATH="${CUDA_PATH:-/usr/local/cuda}"
  status=0
  work="$(mktemp -d)"
  echo "== 0. Hugging Face fixtures on cuda:0 against the CPU"
  if "$pack/hf_device_check" --tolerance 1e-3 "$pack"/hf-fixtures/*/; then :; else status=1; fi
  echo "== 1. NCCL vs TCP, one rank"
  if MASTER_PORT=29600 "$pack/nccl_check"; then echo "PASS nccl one rank"; else echo "FAIL nccl one rank"; status=1; fi
  echo "== 2. NCCL, two ranks on one GPU"
  if NCCL_MULTI_RANK_GPU_ENABLE=1 timeout 120 torchrun --nproc-per-node 2 --master-port 29610 --no-python "$pack/nccl_check"; then
    echo "PASS nccl two ranks"
  else
    echo "SKIP nccl two ranks (this NCCL refuses two ranks on one GPU, or torchrun is missing)"
  fi
  data="$work/data.yml"
  printf 'data_path: %s\nsplit: "949,50,1"\ntokenizer_type: CharLevelTokenizer\npadded_vocab_size: 512\ntrain_iters: 20\nlr_decay_iters: 20\neval_interval: 10\neval_iters: 2\nlog_interval: 1\n' \
    "$PWD/$pack/mail_text_document" > "$data"
  echo "== 3. cpu-tiny on cuda:0"
  printf 'log_dir: %s\n' "$work/plain" > "$work/plain.yml"
  if "$pack/neox-train" --config configs/cpu-tiny.yml "$data" "$work/plain.yml" --device cuda:0; then
    python3 - "$work/plain/metrics.jsonl" <<'PY'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
ms = sorted(x["step_ms"] for x in r[3:])
print(f"first loss {r[0]['loss']:.4f} last {r[-1]['loss']:.4f}; median {ms[len(ms)//2]:.1f} ms/step; {r[-1]['tokens_per_s']:.0f} tokens/s")
print("PASS loss falls" if r[-1]["loss"] < r[0]["loss"] else "FAIL loss does not fall")
PY
  else echo "FAIL cpu-tiny on cuda:0"; status=1; fi
  echo "== 4. one data-parallel rank through NCCL (ZeRO-1) equals the plain run"
  printf 'log_dir: %s\nzero_optimization: {stage: 1}\n' "$work/nccl" > "$work/nccl.yml"
  if MASTER_PORT=29620 "$pack/neox-train" --config configs/cpu-tiny.yml "$data" "$work/nccl.yml" --device cuda:0 --comm nccl; then
    python3 - "$work/plain/metrics.jsonl" "$work/nccl/metrics.jsonl" <<'PY'
import json, sys
key = lambda r: (r["kind"], r["iteration"], r["loss"], r.get("grad_norm"))
a, b = ([key(json.loads(l)) for l in open(p)] for p in sys.argv[1:3])
print("PASS NCCL step equals plain" if a == b else f"FAIL NCCL differs: {a[:2]} vs {b[:2]}")
PY
  else echo "FAIL neox-train --comm nccl"; status=1; fi
  echo "== 5. 125M at seq 2048 on cuda:0, f32 then bf16: tokens/s, TFLOP/s, MFU"
  for precision in f32 bf16; do
    if [ "$precision" = bf16 ]; then half='bf16: {enabled: true}'; else half='bf16: {enabled: false}'; fi
    printf 'log_dir: %s\npadded_vocab_size: 50304\ntrain_iters: 12\nlr_decay_iters: 12\nwarmup: 0.1\neval_interval: 1000\nlog_interval: 1\nfp16: {enabled: false}\n%s\n' \
      "$work/125m-$precision" "$half" > "$work/125m-$precision.yml"
    if "$pack/neox-train" --config configs/125M.yml "$data" "$work/125m-$precision.yml" --device cuda:0; then
      python3 - "$work/125m-$precision/metrics.jsonl" "$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)" "${NEOX_PEAK_TFLOPS:-989,67}" "$precision" <<'PY'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l][3:]
r.sort(key=lambda x: x["step_ms"])
m = r[len(r) // 2]
bf16, fp32 = (float(x) for x in sys.argv[3].split(","))
tf = m["flops_per_s"] / 1e12
print(f"125M {sys.argv[4]} seq 2048 on {sys.argv[2] or 'the GPU'}: median {m['step_ms']:.1f} ms/step, "
      f"{m['tokens_per_s']:.0f} tokens/s, {tf:.2f} TFLOP/s achieved; "
      f"MFU {100 * tf / fp32:.1f}% of FP32 peak {fp32:g}, {100 * tf / bf16:.2f}% of BF16 peak {bf16:g} TFLOP/s")
PY
    else echo "FAIL 125M $precision on cuda:0"; status=1; fi
  done
  echo "== 6. ZeRO-Offload on cuda:0 (Adam on the host) against the device optimizer"
  printf 'log_dir: %s\nzero_optimization: {stage: 1, offload_optimizer: {device: cpu}}\n' "$work/offload" > "$work/offload.yml"
  if "$pack/neox-train" --config configs/cpu-tiny.yml "$data" "$work/offload.yml" --device cuda:0; then
    python3 - "$work/plain/metrics.jsonl" "$work/offload/metrics.jsonl" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(p) if '"train"' in l] for p in sys.argv[1:3])
d = max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b))
ms = sorted(x["step_ms"] for x in b[3:])
print(f"offload: largest loss difference {d:.3g} over {len(b)} steps; median {ms[len(ms)//2]:.1f} ms/step")
print("PASS offload within 1e-4 of the device optimizer" if len(a) == len(b) and d <= 1e-4 else "FAIL offload differs")
PY
  else echo "FAIL offload on cuda:0"; status=1; fi
  exit $status
  ;;
*)
  echo "usage: scripts/gpu-check.sh pack|run" >&2; exit 2 ;;
esac
