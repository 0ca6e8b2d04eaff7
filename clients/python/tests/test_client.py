"""The client against a real corrald: calls, typed errors, install and
unload, events, with the blocking and the asyncio client."""

from __future__ import annotations

import asyncio
import time

import pytest
from daemon import copy_package

import corral_client as cc
from corral_client import AsyncClient, Client


def test_health_list_info_and_metrics(client: Client):
    health = client.health()
    assert health["status"] == "ok"
    assert health["plugins_loaded"] >= 2
    names = {p["name"]: p for p in client.list()}
    assert names["hello"]["state"] == "ready"
    info = client.info("hello")
    assert info["manifest"]["plugin"]["name"] == "hello"
    assert len(info["processes"]) == 1
    assert client.exists("hello") and not client.exists("nobody")
    assert client.policy("hello")["resources"]["pids_max"] == 4, "hello asks for 4"
    assert "corral_children_alive{plugin=\"hello\"} 1" in client.metrics()
    report = client.reload_configuration()
    assert report["policy_changed"] == [] and report["unloaded"] == [], report


def test_calls_return_output_and_usage(client: Client):
    result = client.call("hello", "greet", {"name": "Ada"})
    assert result.output == {"greeting": "Hello, Ada!"}
    assert result.output_encoding is None
    assert result.usage.wall_ms >= 0 and result.usage.peak_memory_bytes > 0
    # hello's echo answers the raw input bytes, which are JSON here.
    assert client.call("hello", "echo", [1, "two", None]).output == [1, "two", None]


def test_a_missing_plugin_is_plugin_not_found(client: Client):
    with pytest.raises(cc.PluginNotFound) as e:
        client.call("nobody", "greet", {})
    assert e.value.status == 404
    assert e.value.plugin == "nobody"
    assert e.value.code == "plugin_not_found"


def test_a_plugins_own_error_is_plugin_error_with_its_code(client: Client):
    with pytest.raises(cc.PluginError) as e:
        client.call("hello", "no_such_method", None)
    assert e.value.status == 422
    assert e.value.plugin_code == "unknown_method"
    assert "no_such_method" in e.value.message


def test_a_bad_request_is_invalid_input(client: Client):
    with pytest.raises(cc.InvalidInput) as e:
        client.call("hello", "", {})
    assert e.value.status == 400 and e.value.reason


def test_a_call_past_its_timeout_is_timeout_with_the_limit(client: Client):
    with pytest.raises(cc.Timeout) as e:
        client.call("hello", "sleep", {"ms": 5000}, timeout_ms=300)
    assert e.value.status == 504
    assert 0 < e.value.limit_ms <= 300
    assert client.call("hello", "greet", {"name": "later"}).output == {
        "greeting": "Hello, later!"}


def test_deaths_are_typed_and_the_next_call_works(client: Client):
    with pytest.raises(cc.Crashed) as crashed:
        client.call("hostile", "exit", {"code": 3})
    assert crashed.value.exit_code == 3 and crashed.value.status == 502
    assert isinstance(crashed.value, cc.PluginDied)
    client.call("hostile", "whoami")

    with pytest.raises(cc.MemoryLimitExceeded) as oom:
        client.call("hostile", "memory_bomb", {"max_mib": 1024})
    assert oom.value.limit_bytes == 64 << 20, "hostile's limit"
    assert oom.value.limit_mb == 64
    assert isinstance(oom.value.peak_bytes, int) and oom.value.used_mb is not None
    client.call("hostile", "whoami")

    with pytest.raises(cc.SeccompViolation):
        client.call("hostile", "socket", {"domain": "inet"})
    client.call("hostile", "whoami")


def test_unload_makes_calls_not_loaded_until_load(client: Client, daemon):
    summary = client.unload("hello")
    assert summary["state"] == "installed"
    with pytest.raises(cc.NotLoaded) as e:
        client.call("hello", "greet", {"name": "x"})
    assert e.value.plugin == "hello" and e.value.status == 409
    assert client.load("hello")["state"] == "ready"
    assert client.call("hello", "greet", {"name": "back"}).output == {
        "greeting": "Hello, back!"}


def test_install_from_a_path_and_delete(client: Client, daemon, env):
    path = copy_package(env.package("hello"), daemon.root / "uploads" / "hello-path", "hello-path")
    installed = client.install(path, load=True)
    assert installed["plugin"] == "hello-path" and not installed["unchanged"]
    assert installed["state"] == "ready"
    assert client.call("hello-path", "greet", {"name": "path"}).output == {
        "greeting": "Hello, path!"}
    # The same package again changes nothing.
    assert client.install(path)["unchanged"] is True
    assert client.delete("hello-path") == {"removed": "hello-path"}
    with pytest.raises(cc.PluginNotFound):
        client.call("hello-path", "greet", {"name": "gone"})


def test_upload_a_directory_and_a_name_clash(client: Client, daemon, env):
    path = copy_package(env.package("hello"), daemon.root / "uploads" / "hello-up", "hello-up")
    installed = client.upload(path, load=True)
    assert installed["plugin"] == "hello-up"
    assert client.call("hello-up", "greet", {"name": "up"}).output == {"greeting": "Hello, up!"}
    # Another package under a taken name is refused unless replacing.
    manifest = path / "plugin.toml"
    manifest.write_text(manifest.read_text().replace('version = "0.1.0"', 'version = "0.2.0"'))
    with pytest.raises(cc.AlreadyExists) as e:
        client.upload(path)
    assert e.value.installed_version == "0.1.0"
    assert client.upload(path, replace=True, load=True)["version"] == "0.2.0"
    client.delete("hello-up")


def test_a_bad_manifest_is_invalid_manifest_naming_the_key(client: Client, daemon, env):
    path = copy_package(env.package("hello"), daemon.root / "uploads" / "typo", "typo")
    manifest = path / "plugin.toml"
    manifest.write_text(manifest.read_text().replace("[plugin]", "[plugin]\ncolour = \"red\""))
    with pytest.raises(cc.InvalidManifest) as e:
        client.upload(path)
    assert e.value.key is not None and "colour" in e.value.key
    assert not client.exists("typo")


def test_events_stream_lifecycle(client: Client, daemon):
    with client.events("hello", timeout=60) as events:
        client.reload("hello")
        seen = []
        for event in events:
            seen.append(event["type"])
            assert event["plugin"] == "hello"
            if event["type"] == "ready":
                break
    assert "ready" in seen, seen
    daemon.wait_plugin_ready("hello")


def test_package_files_are_listed_and_read(client: Client, env):
    built = env.package("hello")
    files = {f["path"]: f for f in client.files("hello")}
    entry = (built / "bin" / "hello").read_bytes()
    assert files["bin/hello"]["size"] == len(entry)
    assert files["bin/hello"]["modified_ms"] > 0 and "plugin.toml" in files
    assert client.file("hello", "bin/hello") == entry
    assert client.file("hello", "plugin.toml") == (built / "plugin.toml").read_bytes()
    for bad in ["../../etc/passwd", "bin/../plugin.toml", "no-such-file", "bin"]:
        with pytest.raises(cc.InvalidInput):
            client.file("hello", bad)
    with pytest.raises(cc.PluginNotFound):
        client.files("nobody")


def test_a_missing_socket_is_daemon_unavailable(tmp_path):
    with pytest.raises(cc.DaemonUnavailable):
        Client(tmp_path / "nothing.sock").health()
    with pytest.raises(cc.DaemonUnavailable):
        asyncio.run(AsyncClient(tmp_path / "nothing.sock").health())


# ---------------------------------------------------------------- asyncio


def test_async_calls_errors_and_concurrency(daemon):
    async def main():
        client = AsyncClient(daemon.socket, timeout=60)
        assert (await client.health())["status"] == "ok"
        results = await asyncio.gather(*[
            client.call("hello", "greet", {"name": str(i)}) for i in range(8)])
        assert [r.output["greeting"] for r in results] == [f"Hello, {i}!" for i in range(8)]
        with pytest.raises(cc.PluginNotFound):
            await client.call("nobody", "greet")
        with pytest.raises(cc.Timeout) as e:
            await client.call("hello", "sleep", {"ms": 5000}, timeout_ms=300)
        assert 0 < e.value.limit_ms <= 300
        with pytest.raises(cc.Crashed) as crashed:
            await client.call("hostile", "exit", {"code": 4})
        assert crashed.value.exit_code == 4
        assert (await client.call("hostile", "whoami")).output is not None
        names = [p["name"] for p in await client.list()]
        assert "hello" in names
        listed = [f["path"] for f in await client.files("hello")]
        assert "plugin.toml" in listed
        manifest = await client.file("hello", "plugin.toml")
        assert b"[plugin]" in manifest
        with pytest.raises(cc.InvalidInput):
            await client.file("hello", "../plugin.toml")
        assert "corral_calls_total" in await client.metrics()

    asyncio.run(main())


def test_async_events_and_lifecycle(daemon):
    async def main():
        client = AsyncClient(daemon.socket, timeout=60)
        async with client.events("hello") as events:
            assert (await client.unload("hello"))["state"] == "installed"
            assert (await client.load("hello"))["state"] == "ready"
            seen = []
            deadline = time.monotonic() + 60
            while "ready" not in seen:
                assert time.monotonic() < deadline, seen
                event = await asyncio.wait_for(events.__anext__(), 60)
                assert event["plugin"] == "hello"
                seen.append(event["type"])
        assert "unloaded" in seen and "loaded" in seen, seen
        result = await client.call("hello", "greet", {"name": "async"})
        assert result.output == {"greeting": "Hello, async!"}

    asyncio.run(main())
    daemon.wait_plugin_ready("hello")
