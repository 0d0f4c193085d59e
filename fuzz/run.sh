#!/usr/bin/env bash
# Builds every fuzz target and runs each for a fixed time, one after another, one job each.
#
#   fuzz/run.sh [SECS_PER_TARGET] [TARGET...]     (default: 60 s, every target)
#
# Needs the nightly toolchain (`cargo +nightly`); installs cargo-fuzz from crates.io into a
# cache dir when it is missing (FUZZ_TOOLS, default ~/.cache/rpc-fuzz-tools). Checked-in
# seeds (fuzz/seeds/T) are read, new inputs go to fuzz/corpus/T (not committed), crashes to
# fuzz/artifacts/T. Exits non-zero on the first target that finds a crash, printing how to
# reproduce it. FUZZ_SANITIZER (default: address; `none` builds faster) is passed to cargo
# fuzz; FUZZ_DEV and FUZZ_TARGET_DIR are described below.
set -euo pipefail
cd "$(dirname "$0")"

secs="${1:-60}"
shift || true
tools="${FUZZ_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/rpc-fuzz-tools}"
export PATH="$tools/bin:$PATH"
export CARGO_INCREMENTAL=0

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz into $tools"
    cargo install cargo-fuzz --locked --root "$tools"
fi

sanitizer="${FUZZ_SANITIZER:-address}"
# 16 codegen units: the build (most of a short run) takes a fraction of the time of
# cargo-fuzz's default of 1, for somewhat slower execution.
build_flags=(--sanitizer "$sanitizer" --codegen-units "${FUZZ_CODEGEN_UNITS:-16}")
# FUZZ_DEV=1: an unoptimized build (a third of the compile time; fine for a smoke run, slow
# for a long one). FUZZ_TARGET_DIR: build elsewhere than fuzz/target (e.g. a cache kept
# between CI runs).
if [ "${FUZZ_DEV:-0}" = 1 ]; then
    build_flags+=(--dev)
fi
if [ -n "${FUZZ_TARGET_DIR:-}" ]; then
    build_flags+=(--target-dir "$FUZZ_TARGET_DIR")
fi
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

start=$(date +%s)
echo "== building ${#targets[@]} fuzz targets (sanitizer: $sanitizer)"
cargo +nightly fuzz build "${build_flags[@]}"
echo "== built in $(($(date +%s) - start)) s"

for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "== $t for ${secs}s"
    # -jobs=1: one process (CI and developer machines have 2 cores shared with others).
    # The log's last lines give executions (#N), coverage (cov:, ft:) and corpus size.
    # Seeds: the checked-in ones, and for the IDL parser the codegen's own test IDLs, read
    # where they are rather than copied.
    seeds=()
    [ -d "seeds/$t" ] && seeds+=("seeds/$t")
    [ "$t" = thrift_idl ] && seeds+=("../rpc-codegen/tests/idl")
    if ! cargo +nightly fuzz run "${build_flags[@]}" "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$secs" -print_final_stats=1 -timeout=20 \
        -artifact_prefix="artifacts/$t/" >"artifacts/$t.log" 2>&1; then
        tail -50 "artifacts/$t.log"
        echo "== $t FAILED: crash input in fuzz/artifacts/$t/; reproduce with"
        echo "   cargo +nightly fuzz run $t fuzz/artifacts/$t/<file>   (from fuzz/)"
        exit 1
    fi
    grep -E '^(#[0-9]+|stat::number_of_executed_units|stat::peak_rss_mb)' "artifacts/$t.log" |
        grep -E 'DONE|stat::' | tr '\n' ' ' || true
    echo
done
echo "== fuzzed ${#targets[@]} targets in $(($(date +%s) - start)) s"
