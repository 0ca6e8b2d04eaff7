#!/usr/bin/env bash
# The CLI tests that run real confined plugins (marked #[ignore] because a
# plain `cargo test` has no packaged plugins): packages the plugins with
# `cargo xtask package`, then runs those tests against them.
#
#   cli/tests/run-confined.sh [extra cargo test arguments]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
cd "$root"
cargo xtask package
# The trampoline binary itself (the packaging step may build only its library).
cargo build -p corral-sandbox --bins
CORRAL_TEST_PACKAGES="$target/corral-packages" \
CORRAL_SANDBOX="$target/debug/corral-sandbox" \
    cargo test -p corral --test local_commands -- --ignored "$@"
