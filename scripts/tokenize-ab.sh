#!/usr/bin/env bash
# Old and new tokenize bench binaries compared in interleaved rounds, the
# way a change's figures in README's tokenize section were measured.
#
#   scripts/tokenize-ab.sh ROUNDS MODE THREADS INPUT BIN_A BIN_B [BIN ...]
#
# MODE is a stage of `benches/tokenize.rs` (raw, e2e, read, write,
# decompress); each BIN is a built tokenize bench binary (copy
# target/release/deps/tokenize-* aside before rebuilding). Each round runs
# every binary once, in turn; prints per binary the mean CPU and wall ms
# per MB of text and the median over the rounds of BIN_A's wall / its wall.
set -euo pipefail
if [ $# -lt 5 ]; then
  sed -n '2,12p' "$0" >&2
  exit 2
fi
rounds=$1 mode=$2 threads=$3 input=$4
shift 4
[ -f "$input" ] || { echo "error: no input file $input" >&2; exit 2; }
for bin in "$@"; do
  [ -x "$bin" ] || { echo "error: $bin is not an executable bench binary" >&2; exit 2; }
done
for round in $(seq "$rounds"); do
  for i in $(seq $#); do
    bin=${!i}
    NEOX_BENCH_CHILD="$(printf '%s\tgpt2 (fast bpe)\t%s\t%s' "$mode" "$threads" "$input")" "$bin" |
      awk -v i="$i" -v r="$round" '{ printf "%d %d %.6f %.6f\n", i, r, $4 * 1e9 / $1, $3 * 1e9 / $1 }'
  done
done | awk -v names="$*" '
  { cpu[$1] += $3; wall[$1] += $4; n[$1]++; w[$1, $2] = $4; rounds = ($2 > rounds ? $2 : rounds) }
  END {
    split(names, bin, " ")
    for (i = 1; i <= length(n); i++) {
      k = 0
      for (r = 1; r <= rounds; r++) ratio[++k] = w[1, r] / w[i, r]
      for (a = 2; a <= k; a++) for (b = a; b > 1 && ratio[b - 1] > ratio[b]; b--) {
        t = ratio[b]; ratio[b] = ratio[b - 1]; ratio[b - 1] = t
      }
      med = (k % 2) ? ratio[(k + 1) / 2] : (ratio[k / 2] + ratio[k / 2 + 1]) / 2
      printf "%s: CPU %.2f, wall %.2f ms per MB (mean of %d); wall of the first / this: %.1f%% (median)\n",
        bin[i], cpu[i] / n[i], wall[i] / n[i], n[i], 100 * med
      delete ratio
    }
  }'
