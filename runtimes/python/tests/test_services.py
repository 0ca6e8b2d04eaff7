"""Host services (PROTOCOL.md section 9) through the bootstrap, with a fake
host that answers the plugin's requests."""

from __future__ import annotations

import json
import struct

import pytest
from fakehost import PLUGINS, FakeHost, golden_vectors

from corral import wire

SERVICES = PLUGINS / "services" / "plugin.py"


@pytest.fixture
def host():
    h = FakeHost(SERVICES)
    yield h
    h.close()


def ready(h: FakeHost) -> wire.Request:
    """Handshake at version 2; returns the subscription set-up asked for,
    which goes out right after Ready."""
    h.handshake()
    sub = h.request()
    assert (sub.service, sub.operation, sub.call_id) == ("events", "subscribe", 0)
    assert json.loads(sub.payload) == {"pattern": "boot:*"}
    return sub


def out(reply: wire.Reply):
    assert reply.error is None, f"expected output, got error {reply.error}"
    return json.loads(reply.output)


def test_request_response_and_deliver_encode_as_section_9_says():
    request = wire.Request(7, 3, "kv", "get", b'{"k":1}')
    payload = wire.encode(request)
    assert payload == (struct.pack("<IQQ", 8, 7, 3) + struct.pack("<Q", 2) + b"kv"
                       + struct.pack("<Q", 3) + b"get" + struct.pack("<Q", 7) + b'{"k":1}')
    assert wire.decode_plugin(payload) == request
    ok = wire.Response(7, body=b"{}")
    assert wire.encode(ok) == struct.pack("<IQIQ", 6, 7, 0, 2) + b"{}"
    err = wire.Response(9, error=("timeout", "late", b"{}"))
    assert wire.encode(err) == (struct.pack("<IQIQ", 6, 9, 1, 7) + b"timeout"
                                + struct.pack("<Q", 4) + b"late" + struct.pack("<Q", 2) + b"{}")
    deliver = wire.Deliver("a.b", "client", b"1")
    assert wire.encode(deliver) == (struct.pack("<IQ", 7, 3) + b"a.b" + struct.pack("<Q", 6)
                                    + b"client" + struct.pack("<Q", 1) + b"1")
    for m in (ok, err, deliver):
        assert wire.decode_host(wire.encode(m)) == m


def test_a_bad_service_result_variant_is_refused():
    bad = struct.pack("<IQI", 6, 1, 2)
    with pytest.raises(wire.WireError, match="ServiceResult"):
        wire.decode_host(bad)


def test_hello_offers_versions_1_and_2_and_version_1_still_works(host):
    gold = golden_vectors()
    hello = wire.decode_plugin(host.read_raw_frame()[4:])
    assert hello.versions == [1, 2]
    # At version 1 (the golden Init) nothing about services goes out, and
    # a request fails in the plugin without reaching the host.
    host.send_raw(gold["init"])
    assert host.read_raw_frame() == gold["ready"]
    reply = host.roundtrip(1, "uncaught")
    code, message = reply.error
    assert code == "service_unavailable" and "version 1" in message, message
    assert host.roundtrip(2, "echo", b'"next"').output == b'"next"'


def test_a_dependency_call_carries_the_call_id_and_returns_the_output(host):
    ready(host)
    host.call(5, "call", b'{"plugin":"dep","method":"upper","input":{"t":"a"},"timeout_ms":50}')
    req = host.request()
    assert (req.call_id, req.service, req.operation) == (5, "plugins", "call")
    assert json.loads(req.payload) == {"plugin": "dep", "method": "upper", "input": {"t": "a"},
                                       "timeout_ms": 50}
    host.respond(req, {"output": {"T": "A"}, "usage": {"wall_ms": 1}})
    assert out(host.reply(5)) == {"T": "A"}


def test_every_operation_sends_its_payload_and_returns_its_body(host):
    ready(host)
    host.call(1, "everything")
    expected = [
        ("plugins", "list", {}, {"plugins": ["dep"]}),
        ("events", "publish", {"topic": "orders.created", "payload": {"id": 1}},
         {"delivered": 2, "dropped": 0}),
        ("kv", "get", {"table": "users", "key": "u1"}, {"value": None}),
        ("kv", "put", {"table": "users", "key": "u1", "value": {"n": 1}}, {}),
        ("kv", "delete", {"table": "users", "key": "u1"}, {"deleted": True}),
        ("kv", "list", {"table": "users", "prefix": "u", "limit": 10},
         {"keys": ["u2"], "next": None}),
        ("s3", "get", {"bucket": "data", "key": "a.txt"},
         {"body": "AGhp", "size": 3, "etag": "e1", "content_type": "text/plain"}),
        ("s3", "put", {"bucket": "data", "key": "a.txt", "body": "AGhp",
                       "content_type": "text/plain"}, {"etag": "e2"}),
        ("s3", "list", {"bucket": "data", "after": "a"}, {"objects": [], "next": None}),
        ("s3", "delete", {"bucket": "data", "key": "a.txt"}, {}),
        ("config", "get", {}, {"greeting": "hi"}),
    ]
    for service, operation, payload, body in expected:
        req = host.request()
        assert (req.service, req.operation, req.call_id) == (service, operation, 1)
        assert json.loads(req.payload) == payload
        host.respond(req, body)
    assert out(host.reply(1)) == {
        "plugins": ["dep"], "published": {"delivered": 2, "dropped": 0}, "get": None,
        "put": None, "deleted": True, "list": {"keys": ["u2"], "next": None},
        "s3get": "AGhp", "etag": "e2", "s3list": {"objects": [], "next": None},
        "s3delete": None, "settings": {"greeting": "hi"}}


def test_errors_are_typed_exceptions_with_their_details(host):
    ready(host)
    host.call(1, "typed_error")
    req = host.request()
    host.respond(req, error=("permission_denied", "grant kv.table secrets in the policy"),
                 details={"permission": "kv.table secrets"})
    assert out(host.reply(1)) == {"class": "PermissionDenied", "code": "permission_denied",
                                  "permission": "kv.table secrets",
                                  "message": "grant kv.table secrets in the policy"}
    host.call(2, "quota")
    host.respond(host.request(), error=("quota_exceeded", "full"),
                 details={"quota_bytes": 16, "used_bytes": 12})
    assert out(host.reply(2)) == {"quota_bytes": 16, "used_bytes": 12}


def test_an_uncaught_service_error_answers_the_call_with_its_code(host):
    ready(host)
    host.call(1, "uncaught")
    host.respond(host.request(), error=("service_unavailable", "no daemon"),
                 details={"service": "kv"})
    assert host.reply(1).error == ("service_unavailable", "no daemon")
    # An unknown code is still an error with that code; bad details are ignored.
    host.call(2, "uncaught")
    host.send(wire.Response(host.request().id, error=("brand_new", "later", b"[not json")))
    assert host.reply(2).error == ("brand_new", "later")


def test_frames_that_come_while_an_inline_handler_waits_are_not_lost(host):
    ready(host)
    host.call(1, "call_inline", b'"x"')
    req = host.request()
    # While call 1 waits on the reading thread: a Ping is answered, a Call
    # and a Delivery wait their turn, a Response for nobody is ignored.
    host.send(wire.HostPing(77))
    assert host.read_skipping_logs() == wire.Pong(77)
    host.call(2, "echo", b'"second"')
    host.deliver("boot:now", {"n": 1})
    host.send(wire.Response(999, body=b"{}"))
    host.respond(req, {"output": "done"})
    replies = {}
    publish = None
    while len(replies) < 2 or publish is None:
        m = host.read_skipping_logs()
        if isinstance(m, wire.Request):
            publish = m
        else:
            replies[m.id] = m
    assert out(replies[1]) == "done" and out(replies[2]) == "second"
    # The delivery ran its handler, which published from outside any call.
    assert (publish.service, publish.operation, publish.call_id) == ("events", "publish", 0)
    host.respond(publish, {"delivered": 0, "dropped": 0})
    host.call(3, "seen_events", b"1")
    assert out(host.reply(3)) == [{"payload": {"n": 1}, "topic": "boot:now", "from": "client"}]


def test_async_handlers_await_requests_and_responses_may_come_in_any_order(host):
    ready(host)
    host.call(1, "call_async", b"1")
    host.call(2, "call_async", b"2")
    first = {json.loads(r.payload)["input"]: r for r in (host.request(), host.request())}
    # Answer call 2's request before call 1's.
    host.respond(first[2], {"output": "two"})
    host.respond(first[1], {"output": "one"})
    gets = {r.call_id: r for r in (host.request(), host.request())}
    assert sorted(gets) == [1, 2], "corral.host found each task's call"
    host.respond(gets[1], {"value": "v1"})
    host.respond(gets[2], {"value": "v2"})
    replies = host.replies(2)
    assert out(replies[1]) == ["one", "v1"] and out(replies[2]) == ["two", "v2"]


def test_cancel_ends_the_wait_and_a_late_response_is_dropped(host):
    ready(host)
    host.call(4, "wait_cancel")
    req = host.request()
    host.send(wire.Cancel(4))
    assert host.reply(4).error == ("cancelled", "the host cancelled the call while it waited "
                                                "for plugins.call")
    host.respond(req, {"output": "too late"})
    assert host.roundtrip(5, "echo", b'"alive"').output == b'"alive"'


def test_subscriptions_route_deliveries_by_pattern(host):
    sub = ready(host)
    host.respond(sub)
    host.call(1, "subscribe", b'"data:*"')
    req = host.request()
    assert json.loads(req.payload) == {"pattern": "data:*"} and req.call_id == 1
    host.respond(req)
    assert out(host.reply(1)) == "subscribed"
    host.deliver("data:saved", [1], sender="writer")
    host.deliver("other", "nobody listens")  # matches no pattern: dropped
    host.deliver("boot:x", "b")
    published = [host.request(), host.request()]
    for p in published:
        host.respond(p, {"delivered": 0, "dropped": 0})
    host.call(2, "seen_events", b"2")
    got = out(host.reply(2))
    assert sorted(got, key=lambda e: e["topic"]) == [
        {"payload": "b", "topic": "boot:x", "from": "client"},
        {"payload": [1], "topic": "data:saved", "from": "writer"}]
    host.call(3, "unsubscribe", b'"data:*"')
    req = host.request()
    assert (req.operation, json.loads(req.payload)) == ("unsubscribe", {"pattern": "data:*"})
    host.respond(req, {"removed": True})
    assert out(host.reply(3)) is True


def test_a_subscription_refused_at_start_is_logged_and_its_handler_dropped(host):
    sub = ready(host)
    host.respond(sub, error=("permission_denied", "grant events.subscribe boot:*"),
                 details={"permission": "events.subscribe boot:*"})
    host.deliver("boot:now", 1)  # no handler left: nothing is published
    assert out(host.roundtrip(1, "echo", b'"ok"')) == "ok"
    assert any("subscribing to 'boot:*' failed" in log.message for log in host.logs), host.logs


def test_a_request_over_the_frame_limit_is_payload_too_large_and_nothing_is_sent(host):
    host.handshake(max_frame=1024)
    host.respond(host.request())
    reply = host.roundtrip(1, "big_publish", b"2000")
    assert reply.error[0] == "payload_too_large", reply.error
    assert out(host.roundtrip(2, "echo", b"3")) == 3


def test_pattern_matching_is_the_hosts():
    from corral.services import pattern_matches

    assert pattern_matches("data:*", "data:saved")
    assert pattern_matches("*", "x")
    assert pattern_matches("a*b*c", "a-b-b-c")
    assert pattern_matches("orders", "orders")
    assert not pattern_matches("orders", "orders.x")
    assert not pattern_matches("data:*", "user:data:x")
    assert not pattern_matches("a*b*c", "a-c")
    assert not pattern_matches("ab*ba", "aba")


def test_seed_002_plugins_reach_services_from_initialize_and_execute():
    h = FakeHost(PLUGINS / "seed_services" / "plugin.py")
    try:
        h.handshake()
        sub = h.request()
        assert (sub.operation, json.loads(sub.payload), sub.call_id) == (
            "subscribe", {"pattern": "jobs:*"}, 0)
        h.respond(sub)
        h.call(3, "lookup", b'{"inputs": {"key": "k1"}}')
        get = h.request()
        assert (get.service, get.operation, get.call_id) == ("kv", "get", 3)
        assert json.loads(get.payload) == {"table": "cache", "key": "k1"}
        h.respond(get, {"value": 42})
        assert out(h.reply(3)) == {"value": 42}
    finally:
        h.close()


def test_a_plain_handler_waits_on_the_reading_thread_when_no_thread_is_free(host):
    # pids = 2: no thread besides the reader, so the plain handler runs
    # there and reads on while it waits, as an inline handler does.
    host.handshake(limits=wire.InitLimits(64 << 20, 10_000, 2, 64))
    host.respond(host.request())  # the subscription made at start
    host.call(1, "call", b'{"plugin":"dep","method":"m"}')
    req = host.request()
    host.send(wire.HostPing(3))
    assert host.read_skipping_logs() == wire.Pong(3)
    host.call(2, "echo", b'"queued"')  # waits for call 1: one call at a time
    host.respond(req, {"output": "dep said"})
    assert [host.read_skipping_logs().id for _ in range(2)] == [1, 2]


def test_a_delivery_runs_every_matching_handler_and_each_may_wait_on_the_host(host):
    # The first handler runs on the thread that read the Deliver; the
    # second goes to another thread; both wait for their publish.
    host.respond(ready(host))
    for i, pattern in enumerate(["data:*", "d*"], start=1):
        host.call(i, "subscribe", json.dumps(pattern).encode())
        host.respond(host.request())
        assert out(host.reply(i)) == "subscribed"
    host.deliver("data:saved", {"n": 7})
    published = [host.request(), host.request()]
    assert [(p.operation, json.loads(p.payload)) for p in published] == [
        ("publish", {"topic": "echo", "payload": {"n": 7}})] * 2
    for p in published:
        host.respond(p, {"delivered": 0, "dropped": 0})
    got = out(host.roundtrip(3, "seen_events", b"2"))
    assert got == [{"payload": {"n": 7}, "topic": "data:saved", "from": "client"}] * 2
