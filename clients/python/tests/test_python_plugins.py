"""Python plugins under a real corrald, called through this client: the
decorator example and the seed-002 example run confined, and the escape
suite's Python plugin meets its sandbox and its limits with typed errors.

These need a corrald with the Python runtime (``runtime = "python"``: the
host's python3 running runtimes/python/corral_bootstrap.py); the daemon is
pointed at this checkout's runtimes unless CORRAL_RUNTIMES says otherwise.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from daemon import Daemon, TestEnv

import corral_client as cc

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples" / "plugins"
HOSTILE = ROOT / "tests" / "plugins" / "hostile-python"
#: Crashes are provoked on purpose here, one after the other: restarts
#: come quickly and many of them before a quarantine.
RESTART_FAST = ('[restart]\nbackoff_initial = "10ms"\nbackoff_max = "100ms"\n'
                "crash_loop_failures = 50\n")


@pytest.fixture(scope="module")
def pydaemon(env: TestEnv):
    d = Daemon(env, [], policy=RESTART_FAST,
               extra={"py-greeter": EXAMPLES / "py-greeter", "hostile-python": HOSTILE})
    try:
        d.wait_plugin_ready("py-greeter")
        d.wait_plugin_ready("hostile-python")
        yield d
    except BaseException:
        d.cleanup()
        raise
    d.stop()


def test_a_decorator_plugin_answers_and_its_errors_are_typed(pydaemon: Daemon):
    client = pydaemon.client
    assert client.call("py-greeter", "greet", {"name": "Ada"}).output == {
        "greeting": "Hello, Ada!"}
    assert client.call("py-greeter", "text.count", {"text": "one two three"}).output == {
        "words": 3, "chars": 13}
    with pytest.raises(cc.PluginError) as e:
        client.call("py-greeter", "greet", {})
    assert e.value.plugin_code == "empty_name" and e.value.message == "say who to greet"
    with pytest.raises(cc.PluginError) as e:
        client.call("py-greeter", "nope")
    assert e.value.plugin_code == "unknown_method"
    # A handler that honours the cancel: the call is `timeout`, the plugin
    # lives on.
    before = [p["pid"] for p in client.info("py-greeter")["processes"]]
    with pytest.raises(cc.Timeout) as t:
        client.call("py-greeter", "sleep", {"ms": 20_000}, timeout_ms=300)
    assert 0 < t.value.limit_ms <= 300
    assert client.call("py-greeter", "greet", {"name": "again"}).output == {
        "greeting": "Hello, again!"}
    assert [p["pid"] for p in client.info("py-greeter")["processes"]] == before


def test_a_seed_002_plugin_installs_and_runs_its_nodes(pydaemon: Daemon):
    async def main():
        client = cc.AsyncClient(pydaemon.socket, timeout=60)
        installed = await client.install(EXAMPLES / "text-nodes", load=True)
        assert (installed["plugin"], installed["state"]) == ("text-nodes", "ready")
        counted, shouted = await asyncio.gather(
            client.call("text-nodes", "word_count", {"inputs": {"text": "one two three"}}),
            client.call("text-nodes", "text_transform",
                        {"inputs": {"text": "hi"}, "parameters": {"mode": "upper"}}))
        assert counted.output == {"words": 3, "chars": 13}
        assert shouted.output == {"output": "HI"}
        specs = (await client.call("text-nodes", "get_node_types")).output
        assert [s["node_type"] for s in specs] == ["word_count", "text_transform"]
        with pytest.raises(cc.PluginError) as e:
            await client.call("text-nodes", "word_count", {"inputs": {"text": 5}})
        assert e.value.plugin_code == "invalid_input"
        assert (await client.delete("text-nodes")) == {"removed": "text-nodes"}

    asyncio.run(main())


def test_the_sandbox_holds_for_python(pydaemon: Daemon):
    client = pydaemon.client
    whoami = client.call("hostile-python", "whoami").output
    assert whoami["pid"] == 1 and pydaemon.uid_first <= whoami["uid"] <= pydaemon.uid_last
    # Files outside the package and the runtime: refused inside the sandbox,
    # either absent from its minimal root or refused by Landlock.
    for method in ("read_file", "write_file"):
        result = client.call("hostile-python", method).output
        assert result["ok"] is False, result
        assert result["error"] in ("FileNotFoundError", "PermissionError", "OSError"), result
    assert client.call("hostile-python", "write_scratch").output == {"ok": True,
                                                                      "result": "fine"}
    assert client.call("hostile-python", "list_processes").output == {"ok": True,
                                                                       "result": [1]}
    # System calls outside the allow-list kill the plugin, whatever Python
    # module reaches them; each is typed and the next call is served.
    for method in ("socket", "subprocess", "fork", "system", "ctypes_call", "setuid"):
        with pytest.raises(cc.SeccompViolation):
            client.call("hostile-python", method)
        assert client.call("hostile-python", "whoami").output["pid"] == 1


def test_a_python_plugin_reaches_host_services_through_corrald(pydaemon: Daemon):
    # Protocol version 2 is negotiated and the request reaches corrald;
    # what it answers depends on the services it offers, and the plugin
    # sees either the body or a typed error, never a hang or a crash.
    result = pydaemon.client.call("hostile-python", "service").output
    assert "ok" in result or (result["error"], result["code"]) in (
        ("PermissionDenied", "permission_denied"),
        ("ServiceUnavailable", "service_unavailable"),
    ), result
    assert pydaemon.client.call("hostile-python", "whoami").output["pid"] == 1


def test_limits_hold_for_python(pydaemon: Daemon):
    client = pydaemon.client
    with pytest.raises(cc.MemoryLimitExceeded) as oom:
        client.call("hostile-python", "memory_bomb", {"max_mib": 1024})
    assert oom.value.limit_bytes == 64 << 20, "the manifest's limit"
    assert client.call("hostile-python", "whoami").output["pid"] == 1
    with pytest.raises(cc.Timeout) as t:
        client.call("hostile-python", "spin")
    assert t.value.limit_ms == 2000, "the manifest's timeout"
    assert client.call("hostile-python", "whoami").output["pid"] == 1
    with pytest.raises(cc.PluginError) as e:
        client.call("hostile-python", "raise_error")
    assert e.value.message == "RuntimeError: on purpose"
