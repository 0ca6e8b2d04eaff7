#!/usr/bin/env bash
# A short fuzzing pass over both targets, for the test suite and CI:
# CORRAL_FUZZ_SECONDS per target (default 20). Longer runs: see README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${CORRAL_FUZZ_SECONDS:-20}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: run 'cargo install --locked cargo-fuzz' (CI's .ci/run does)" >&2
    exit 1
fi
for target in frame_decoder manifest; do
    mkdir -p "fuzz/corpus/$target"
    echo "fuzzing $target for ${seconds}s"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" \
        -- -max_total_time="$seconds" -print_final_stats=1 2>&1 | tail -n 12
    # cargo fuzz exits non-zero on a crash, and pipefail carries it here.
done
