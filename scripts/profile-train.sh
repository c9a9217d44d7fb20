#!/usr/bin/env bash
# Where a CPU training step spends its time, per op: builds the training bench
# (trainer/benches/train.rs) and profiles one of its shapes in this process.
#
#   scripts/profile-train.sh [SHAPE] [STEPS] [THREADS] [perf|callgrind]
#   scripts/profile-train.sh cpu-tiny-gpt2 4 1            # the defaults
#
# Shapes: cpu-tiny-gpt2, cpu-tiny-char, 125M-seq128. Prints the split into
# forward + loss / backward / optimizer (the bench child's JSON line), page
# faults and kernel time (load-independent), then the hottest functions:
# - perf (default): cpu-clock samples, self time per function;
# - callgrind: instruction counts per function (independent of the machine's
#   load, ~50x slower: use 1-2 steps).
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
*)
    echo "error: tool must be perf or callgrind, not $tool" >&2
    exit 2
    ;;
esac
uptime
