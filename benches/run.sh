#!/usr/bin/env bash
# benches/run.sh [SECONDS] [ROUNDS]
#
# The numbers of issue 17 in one command: builds the two harness binaries in release once, runs
# gRPC against tonic 0.14 (`grpc_vs_tonic`) and TTHeader against volo-thrift and the raw TCP
# floor (`volo_bench`), each with SECONDS-long windows (default 4) and ROUNDS interleaved rounds
# (default 3), and prints one markdown table of both with the issue's bars marked met / not met.
# Both binaries pin the server to core 0 and the client to core 1 (taskset), one tokio worker
# each, a fresh server process per row; figures are medians over the rounds, ratios are taken
# within each round, then their median. Run it on a quiet machine (the load average is printed
# before and after): other processes on either core change the figures.
#
# The full logs (per-round rows, syscall mix, pairwise ratios) are kept in
# target/bench-run/{grpc,ttheader}.log.
set -euo pipefail

secs="${1:-4}"
rounds="${2:-3}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
out="$target/bench-run"
mkdir -p "$out"

cd "$root"
echo "building (release)..." >&2
CARGO_INCREMENTAL=0 cargo build --release --quiet \
    -p benches --bin grpc_vs_tonic -p interop-tests --bin volo_bench >&2

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "gRPC vs tonic: ${secs} s windows, ${rounds} rounds (log: $out/grpc.log)..." >&2
"$target/release/grpc_vs_tonic" "$secs" --runs "$rounds" --rows "$out/grpc.md" >"$out/grpc.log"
echo "TTHeader vs volo-thrift and the raw floor (log: $out/ttheader.log)..." >&2
"$target/release/volo_bench" "$secs" --runs "$rounds" --rows "$out/ttheader.md" >"$out/ttheader.log"
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
quiet="$(awk '{ print ($1 < 2) ? "yes" : "no" }' /proc/loadavg)"

echo
echo "Pinned (server core 0, client core 1, one tokio worker each), 100-byte messages, ${secs} s"
echo "windows, ${rounds} interleaved rounds, medians; ratios are medians of per-round ratios to the"
echo "row named under *reference*. Load average after: ${load_after}."
if [ "$quiet" = no ]; then
    echo
    echo "**The load average was 2 or more: other work shared the cores; rerun on a quiet machine.**"
fi
echo
cat "$out/grpc.md"
tail -n +3 "$out/ttheader.md"
