#!/usr/bin/env bash
# Where a CPU training step spends its time, per op: builds the training bench
# (trainer/benches/train.rs) and profiles one of its shapes in this process.
#
#   scripts/profile-train.sh [SHAPE] [STEPS] [THREADS] [perf|callgrind|callers]
#   scripts/profile-train.sh cpu-tiny-gpt2 4 1            # the defaults
#
# Shapes: cpu-tiny-gpt2, cpu-tiny-char, 125M-seq128. Prints the split into
# forward + loss / backward / optimizer (the bench child's JSON line), page
# faults and kernel time (load-independent), then the hottest functions:
# - perf (default): cpu-clock samples, self time per function;
# - callgrind: instruction counts per function (independent of the machine's
#   load, ~50x slower: use 1-2 steps).
# - callers: which model op causes the samples of small kernels (flex's
#   binary_op, scalar_op, copies, memmove/memset, erff/expf, ...): perf with
#   DWARF call graphs, each sample of a leaf matching $LEAVES charged to the
#   nearest frame of neox or of an autodiff backward step / optimizer.
# Output stays in ${PROFILE_DIR:-target/profile-train}.
set -euo pipefail
shape=${1:-cpu-tiny-gpt2}
steps=${2:-4}
threads=${3:-1}
tool=${4:-perf}
root=$(cd "$(dirname "$0")/.." && pwd)
out=${PROFILE_DIR:-$root/target/profile-train}
mkdir -p "$out"
cd "$root"
bin=$(cargo build -p neox-trainer --bench train --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "error: building the train bench failed (run: cargo build -p neox-trainer --bench train)" >&2; exit 1; }
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); shape $shape, $steps steps, $threads thread(s), $tool"
export RAYON_NUM_THREADS=$threads
/usr/bin/time -f "page faults: %R minor, %F major; user %U s, kernel %S s, wall %e s, peak RSS %M KiB" \
    "$bin" --child "$shape" "$steps"
case $tool in
perf)
    perf record -q -F 499 -g -o "$out/perf.data" -- "$bin" --child "$shape" "$steps" >/dev/null
    perf report -i "$out/perf.data" --no-children --sort dso,symbol --stdio -g none -F overhead,dso,sym \
        --percent-limit 0.7 2>/dev/null | grep -v '^$' | grep -v '^# ' | head -45
    echo "callers: perf report -i $out/perf.data --no-children -G"
    ;;
callgrind)
    valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" \
        "$bin" --child "$shape" "$steps" >/dev/null 2>"$out/callgrind.log"
    callgrind_annotate --inclusive=no "$out/callgrind.out" 2>/dev/null | sed -n '1,60p' |
        cut -c1-180
    ;;
callers)
    leaves=${LEAVES:-binary_op|scalar_op|from_iter|StridedIter|copy_contiguous|memmove|memset|erff|expf|clear_page|to_contiguous}
    perf record -q -F 149 --call-graph=dwarf,16384 -o "$out/perf.data" -- "$bin" --child "$shape" "$steps" >/dev/null
    perf script -i "$out/perf.data" -F ip,sym --no-inline 2>/dev/null | awk -v leaves="$leaves" '
        # One sample: frames from the leaf up, a blank line after it.
        BEGIN { glue = "rayon|core::|alloc::|std::|libc|memmove|memset|Bytes|Allocation|Fn|closure|simd" }
        function short(f) {
            gsub(/<impl [^>]*>|burn_autodiff::backend::Autodiff<B,C>|burn_backend::backend::ops::| for burn_flex::backend::Flex>/, "", f)
            return substr(f, 1, 90)
        }
        function flush() {
            if (n == 0) return
            total++
            if (match(frame[1], leaves)) {
                leaf = substr(frame[1], RSTART, RLENGTH); op = "?"; by = "? (a rayon task)"
                for (i = 2; i <= n; i++)
                    if (frame[i] !~ glue) { op = frame[i]; break }
                for (i = 2; i <= n; i++)
                    if (frame[i] ~ /neox_trainer::|Backward|burn_optim|burn_autodiff::ops/) { by = frame[i]; break }
                count[leaf " <- " short(op) " <- " short(by)]++
            }
            n = 0
        }
        /^[ \t]*$/ { flush(); next }
        { sub(/^[ \t]*[0-9a-f]+ /, ""); frame[++n] = $0 }
        END {
            flush()
            for (k in count) if (count[k] * 500 >= total) printf "%6.2f%%  %s\n", 100 * count[k] / total, k
        }' | sort -rn | head -40
    ;;
*)
    echo "error: tool must be perf, callgrind or callers, not $tool" >&2
    exit 2
    ;;
esac
uptime
