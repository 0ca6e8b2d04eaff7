from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon import Daemon, TestEnv  # noqa: E402


@pytest.fixture(scope="session")
def env() -> TestEnv:
    try:
        return TestEnv()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def daemon(env: TestEnv):
    d = Daemon(env, ["hello", "hostile"])
    try:
        d.wait_plugin_ready("hello")
        d.wait_plugin_ready("hostile")
        yield d
    except BaseException:
        d.cleanup()
        raise
    d.stop()


@pytest.fixture
def client(daemon: Daemon):
    return daemon.client
