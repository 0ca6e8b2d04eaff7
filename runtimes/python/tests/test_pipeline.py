"""Seed 002's plugin shape through the adapter, and entries that fail to
start."""

from __future__ import annotations

import json

import pytest
from fakehost import PLUGINS, RUNTIME, FakeHost

from corral import miniyaml, wire

EXAMPLE = RUNTIME.parent.parent / "examples" / "plugins" / "text-nodes" / "plugin.py"
EDGE = PLUGINS / "seed_edge" / "plugin.py"


def out(reply: wire.Reply):
    assert reply.error is None, reply.error
    return json.loads(reply.output)


@pytest.fixture
def example():
    host = FakeHost(EXAMPLE)
    hello = host.handshake(config=b'{"max_chars": 50}')
    host.hello = hello
    yield host
    host.close()


@pytest.fixture
def edge():
    host = FakeHost(EDGE)
    host.hello = host.handshake(config=b'{"retries": 5}',
                                limits=wire.InitLimits(48 << 20, 1000, 16, 64))
    yield host
    host.close()


def test_the_example_announces_its_plugin_yaml_name_and_version(example):
    assert (example.hello.name, example.hello.version) == ("text-nodes", "0.1.0")
    # initialize ran before Ready and its logger reached the host.
    assert any(log.message == "Initialized text-nodes plugin" for log in example.logs)


def test_the_example_nodes_run_as_methods(example):
    assert out(example.roundtrip(1, "word_count", b'{"inputs": {"text": "one two three"}}')) == {
        "words": 3, "chars": 13}
    assert any(log.message == "counting" and ("chars", "13") in log.fields
               for log in example.logs)
    assert out(example.roundtrip(2, "text_transform",
                                 b'{"inputs": {"text": "hi there"}, '
                                 b'"parameters": {"mode": "title"}}')) == {"output": "Hi There"}
    assert out(example.roundtrip(3, "execute",
                                 b'{"node_type": "text_transform", '
                                 b'"inputs": {"text": "Ab"}, "parameters": {"mode": "lower"}}')
               ) == {"output": "ab"}


def test_get_node_types_is_json(example):
    specs = out(example.roundtrip(1, "get_node_types"))
    assert [s["node_type"] for s in specs] == ["word_count", "text_transform"]
    mode = specs[1]["parameters"][0]
    assert mode["constraints"] == {"enum": ["upper", "lower", "title"]}
    assert specs[0]["inputs"][0]["name"] == "text"


def test_node_errors_are_typed(example):
    r = example.roundtrip(1, "word_count", b'{"inputs": {"text": 5}}')
    assert r.error == ("invalid_input", "WordCountNode.validate_inputs rejected the inputs")
    r = example.roundtrip(2, "text_transform",
                          b'{"inputs": {"text": "x"}, "parameters": {"mode": "shout"}}')
    assert r.error is not None and r.error[0] == "plugin_error"
    assert r.error[1].startswith("ValueError: mode must be one of"), r.error
    r = example.roundtrip(3, "word_count", b'{"text": "forgot the inputs key"}')
    assert r.error is not None and r.error[0] == "invalid_input" and "`text`" in r.error[1]
    r = example.roundtrip(4, "no_such_node", b"{}")
    assert r.error is not None and r.error[0] == "unknown_method"
    assert out(example.roundtrip(5, "word_count", b'{"inputs": {"text": "still fine"}}')) == {
        "words": 2, "chars": 10}


def test_shutdown_calls_the_plugin_shutdown(example):
    example.send(wire.Shutdown(5000))
    assert example.wait_exit() == 0


def test_on_error_may_give_a_fallback(edge):
    assert out(edge.roundtrip(1, "fallback", b'{"inputs": {}}')) == {"ok": True,
                                                                      "node_id": "node-1"}
    assert out(edge.roundtrip(2, "fallback", b'{"inputs": {}, "node_id": "n7"}')) == {
        "ok": True, "node_id": "n7"}
    r = edge.roundtrip(3, "fallback", b'{"inputs": {"fail": true}}')
    assert r.error == ("plugin_error", "RuntimeError: broken")
    assert out(edge.roundtrip(4, "fallback",
                              b'{"inputs": {"fail": true}, "parameters": {"fallback": true}}')
               ) == {"fallback": "broken"}


def test_validate_inputs_and_async_execute(edge):
    assert edge.roundtrip(1, "picky", b'{"inputs": {}}').error[0] == "invalid_input"
    assert out(edge.roundtrip(2, "picky", b'{"inputs": {"x": 1}}')) == {"x": 1}
    assert out(edge.roundtrip(3, "async_node", b'{"inputs": {"values": [1, 2, 3]}}')) == {
        "sum": 6}


def test_the_manifest_and_context_come_from_plugin_yaml_and_init(edge):
    assert (edge.hello.name, edge.hello.version) == ("seed_edge", "2.1.0")
    # `manifest` is no declared node type: reachable through execute.
    got = out(edge.roundtrip(1, "execute", b'{"node_type": "manifest"}'))
    assert got["name"] == "seed_edge" and got["author"] == "Test"
    assert got["description"] == "Corners of the seed-002 adapter.\nTwo lines.\n"
    assert got["extra"] == {"configuration": {"retries": {"type": "integer", "default": 3}}}
    assert got["config"] == {"retries": 5}
    assert got["memory"] == 48


@pytest.mark.parametrize("plugin, why", [
    ("seed_broken_init", "cannot reach the database"),
    ("no_plugin", "defines no corral.Plugin"),
    ("syntax_error", "SyntaxError"),
    ("missing", "does not exist"),
    ("two_classes", "several plugin classes (One, Two)"),
])
def test_a_plugin_that_cannot_start_exits_non_zero_before_ready(plugin, why):
    host = FakeHost(PLUGINS / plugin / "plugin.py")
    try:
        if plugin == "seed_broken_init":
            assert isinstance(host.read_skipping_logs(), wire.Hello)
            host.send(wire.Init(1, 4096, b"{}", wire.InitLimits()))
        assert host.wait_exit() != 0
        assert host.channel_closed(), "no Ready"
        assert why in host.stderr()
    finally:
        host.close()


def test_miniyaml_reads_seed_002s_manifest():
    text = """
# plugin.yaml
name: example_plugin
version: 1.0.0
dependencies:
  - numpy>=1.20.0
permissions: [filesystem.read, "network.http"]
entry_point: ./example_plugin.py
max_engine_version: 2.0.0
configuration:
  max_batch_size:
    type: integer   # a comment
    default: 100
    required: false
"""
    assert miniyaml.loads(text) == {
        "name": "example_plugin", "version": "1.0.0", "dependencies": ["numpy>=1.20.0"],
        "permissions": ["filesystem.read", "network.http"],
        "entry_point": "./example_plugin.py", "max_engine_version": "2.0.0",
        "configuration": {"max_batch_size": {"type": "integer", "default": 100,
                                             "required": False}},
    }


def test_a_plugin_yaml_beyond_the_small_reader_costs_the_details_not_the_start():
    host = FakeHost(PLUGINS / "bad_yaml" / "plugin.py",
                    env={"CORRAL_PLUGIN": "bad_yaml", "CORRAL_PLUGIN_VERSION": "0.1.0"})
    try:
        hello = host.handshake()
        assert (hello.name, hello.version) == ("bad_yaml", "0.1.0")
        assert "plugin.yaml: line 2: `name` appears twice" in host.stderr()
    finally:
        host.close()


@pytest.mark.parametrize("text, line", [
    ("a: 1\na: 2\n", 2),
    ("a: 1\n  b: 2\n", 2),
    ("a: &anchor 1\n", 1),
    ("a: 'open\n", 1),
])
def test_miniyaml_names_the_bad_line(text, line):
    with pytest.raises(miniyaml.YamlError) as e:
        miniyaml.loads(text)
    assert e.value.line == line
