#!/usr/bin/env bash
# The main job: prepare the shared e-mail corpus as the `enron` corpus, fetched
# over HTTP from a local mirror, then list the corpora and inspect the shard.
#
# ../shared/data/mail.jsonl.zst (6,046 SpamAssassin e-mails) stands in for
# Enron's enron_emails.jsonl.zst: it is served under that name, so
# `prepare enron --mirror URL` fetches it as it would fetch a real mirror.
# It is NOT the Enron file, so the run pins its real checksum (--sha256) and
# prepare reports that its document count differs from Enron's published one.
#
# Usage: cargo build --release --no-default-features && scripts/main-job.sh
# Env: NEOX_SHARED (default ../shared), DATA_DIR (default ./data),
#      NEOX_DATA (the binary; default $CARGO_TARGET_DIR or target, /release/neox-data).
set -euo pipefail
cd "$(dirname "$0")/.."

shared="${NEOX_SHARED:-../shared}"
corpus="$shared/data/mail.jsonl.zst"
bin="${NEOX_DATA:-${CARGO_TARGET_DIR:-target}/release/neox-data}"
data_dir="${DATA_DIR:-./data}"

if [ ! -f "$corpus" ]; then
  echo "error: $corpus is missing (set NEOX_SHARED to the shared folder)" >&2
  exit 1
fi
if [ ! -x "$bin" ]; then
  echo "error: $bin is missing: run 'cargo build --release --no-default-features' first (or set NEOX_DATA)" >&2
  exit 1
fi

# The mirror: one file, under the name the enron corpus expects.
mirror="$(mktemp -d)"
ln -s "$(cd "$(dirname "$corpus")" && pwd)/$(basename "$corpus")" "$mirror/enron_emails.jsonl.zst"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$mirror" >"$mirror.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -rf "$mirror" "$mirror.log"' EXIT

# Wait (at most 10 s) for the server to answer.
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  sleep 0.1
done

sum="$(sha256sum "$corpus" | cut -d' ' -f1)"
echo "== neox-data prepare enron (mirror http://127.0.0.1:$port/, mail.jsonl.zst sha256 $sum)"
"$bin" prepare enron --data-dir "$data_dir" \
  --mirror "http://127.0.0.1:$port/" \
  --sha256 "enron_emails.jsonl.zst=$sum"

echo
echo "== neox-data list"
"$bin" list --data-dir "$data_dir"

echo
echo "== neox-data inspect $data_dir/enron/enron_text_document"
"$bin" inspect "$data_dir/enron/enron_text_document"
