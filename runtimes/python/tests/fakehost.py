"""A fake corral host: starts ``corral_bootstrap.py <entry>`` with one end of
a socketpair on its fd 3, as the supervisor does (without the sandbox), and
speaks the protocol to it through ``corral.wire``."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNTIME = HERE.parent
PLUGINS = HERE / "plugins"
PROTOCOL_MD = RUNTIME.parent.parent / "protocol" / "PROTOCOL.md"

sys.path.insert(0, str(RUNTIME))

from corral.testing import TestHost  # noqa: E402

#: The interpreter plugins run under: this one, or CORRAL_TEST_PYTHON (to
#: check an older python3 against the same tests).
PYTHON = os.environ.get("CORRAL_TEST_PYTHON") or sys.executable


def golden_vectors() -> dict[str, bytes]:
    """Every ```hex NAME block of PROTOCOL.md, as bytes (text after `#` on a
    line is commentary)."""
    text = PROTOCOL_MD.read_text()
    blocks = {}
    for name, body in re.findall(r"```hex ([a-z-]+)\n(.*?)```", text, re.S):
        digits = "".join(line.split("#", 1)[0] for line in body.splitlines())
        blocks[name] = bytes.fromhex(digits)
    return blocks


class FakeHost(TestHost):
    """The test host, on the interpreter under test."""

    def __init__(self, entry: Path | str, *, env: dict[str, str] | None = None) -> None:
        super().__init__(entry, env=env, python=PYTHON)
