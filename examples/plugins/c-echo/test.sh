#!/usr/bin/env bash
# Proves the C plugin works under corral: every method through
# `corral run --json` (confined, as a user would run it), then the protocol
# corners `corral run` cannot reach (wire_test.py plays the host on fd 3).
#
# Needs CORRAL_BIN_DIR (holding `corral`) and CORRAL_TEST_PACKAGES (holding
# the packaged c-echo); `cargo xtask test` sets both.
set -euo pipefail

: "${CORRAL_BIN_DIR:?set CORRAL_BIN_DIR to the directory holding the corral binary}"
: "${CORRAL_TEST_PACKAGES:?set CORRAL_TEST_PACKAGES to the packages directory (cargo xtask package)}"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CORRAL=$CORRAL_BIN_DIR/corral
PKG=$CORRAL_TEST_PACKAGES/c-echo

fail() {
    echo "FAIL c-echo: $*" >&2
    exit 1
}

[[ -x $CORRAL ]] || fail "$CORRAL is missing or not executable"
[[ -x $PKG/bin/c-echo ]] || fail "$PKG/bin/c-echo is missing: run cargo xtask package"
command -v python3 >/dev/null || fail "python3 is needed for the JSON checks"

# Compares canonical JSON, so 1, 1.0 and true stay different.
CHECK_OK='
import json, sys
method, expected, actual = sys.argv[1:]
got = json.loads(actual)
canon = lambda v: json.dumps(v, sort_keys=True)
assert sorted(got) == ["output", "usage"], f"{method}: top-level keys {sorted(got)}"
output = canon(got["output"])
assert output == canon(json.loads(expected)), f"{method}: output {output}, expected {expected}"
usage = got["usage"]
assert sorted(usage) == ["cpu_ms", "peak_memory_bytes", "wall_ms"], f"{method}: usage {usage}"
for key, value in usage.items():
    assert type(value) in (int, float) and value >= 0, f"{method}: usage.{key} = {value!r}"
'
CHECK_EQ='
import json, sys
what, expected, actual = sys.argv[1:]
canon = lambda v: json.dumps(v, sort_keys=True)
got, want = json.loads(actual), json.loads(expected)
assert canon(got) == canon(want), f"{what}: got {canon(got)}, expected {canon(want)}"
'

check_output=$("$CORRAL" check "$PKG") || fail "corral check exited $?"
[[ $check_output == "ok: c-echo 0.1.0 ("*")" ]] || fail "corral check said: $check_output"
echo "ok   corral check"

# run_ok METHOD INPUT EXPECTED_OUTPUT
run_ok() {
    local out
    out=$("$CORRAL" run "$PKG" -m "$1" -i "$2" --json) || fail "-m $1 exited $?"
    python3 -c "$CHECK_OK" "$1" "$3" "$out" || fail "-m $1 printed $out"
    echo "ok   corral run -m $1 -i '$2' -> $3"
}

run_ok echo '"hello"' '"hello"'
run_ok echo '{"a":[1,2.5,null,true]}' '{"a":[1,2.5,null,true]}'
run_ok reverse '"hello"' '"olleh"'
run_ok upper '"hello"' '"HELLO"'
run_ok upper '{"name":"ada"}' '{"NAME":"ADA"}'
# A fresh plugin per `corral run`: this is its first call, and the host
# granted the whole 1 MiB that c-echo's Hello offered.
run_ok info '"hello"' '{"protocol_version":1,"max_frame":1048576,"calls":1}'

status=0
out=$("$CORRAL" run "$PKG" -m nope -i '"hello"' --json) || status=$?
[[ $status -eq 1 ]] || fail "-m nope exited $status, expected 1; printed $out"
# shellcheck disable=SC2016 # the backticks are part of the expected message
python3 -c "$CHECK_EQ" "-m nope" '{"error": {
    "code": "plugin_error",
    "plugin_code": "unknown_method",
    "message": "no method `nope`; this plugin has echo, reverse, upper and info"}}' "$out" ||
    fail "-m nope printed $out"
echo "ok   corral run -m nope -> exit 1, plugin_error / unknown_method"

# The Log record sent after Ready reaches the host's log.
log=$("$CORRAL" run -v "$PKG" -m echo -i '"x"' 2>&1 >/dev/null) || fail "-v -m echo exited $?"
[[ $log == *"c-echo 0.1.0 started"* ]] || fail "the start-up Log record is not in: $log"
echo "ok   start-up Log record reaches the host"

python3 "$HERE/wire_test.py" "$PKG/bin/c-echo" || fail "wire_test.py"
echo "c-echo: all passed"
