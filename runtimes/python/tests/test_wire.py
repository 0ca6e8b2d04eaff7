"""The codec against PROTOCOL.md's golden vectors, and its refusals."""

from __future__ import annotations

import pytest
from fakehost import golden_vectors

from corral import wire

VECTORS = {
    "hello": wire.Hello("hello", "0.1.0", 4 << 20, versions=[1]),
    "init": wire.Init(1, 1 << 20, b"{}", wire.InitLimits(32 << 20, 10_000, 4, 32)),
    "ready": wire.Ready(),
    "call": wire.Call(1, "greet", b'{"name":"Ada"}', 10_000),
    "reply-ok": wire.Reply(1, output=b'{"greeting":"Hello, Ada!"}'),
    "reply-err": wire.Reply(2, error=("empty_name", "say who")),
    "cancel": wire.Cancel(3),
    "ping": wire.HostPing(0x0102030405060708),
    "pong": wire.Pong(0x0102030405060708),
    "plugin-ping": wire.PluginPing(42),
    "host-pong": wire.HostPong(42),
    "log": wire.Log(wire.LOG_INFO, "started", [("call", "1")]),
    "event": wire.Event("progress", b"20"),
    "shutdown": wire.Shutdown(5000),
    "sandbox-failure": wire.SandboxFailure("seccomp", 22, "invalid"),
    "request": wire.Request(1, 7, "kv", "get", b'{"table":"users","key":"u1"}'),
    "response-ok": wire.Response(1, body=b'{"value":{"n":1}}'),
    "response-err": wire.Response(2, error=(
        "permission_denied", "not granted",
        b'{"code":"permission_denied","message":"not granted","permission":"kv.table secrets"}')),
    "deliver": wire.Deliver("user:1", "accounts", b'{"n":1}'),
}
HOST = (wire.Init, wire.Call, wire.Cancel, wire.HostPing, wire.HostPong, wire.Shutdown,
        wire.Response, wire.Deliver)


def test_every_golden_vector_is_covered():
    assert sorted(golden_vectors()) == sorted(VECTORS)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_golden_vector_encodes_and_decodes_byte_exact(name):
    golden = golden_vectors()[name]
    message = VECTORS[name]
    assert wire.encode_frame(message) == golden
    decode = wire.decode_host if isinstance(message, HOST) else wire.decode_plugin
    buf = wire.FrameBuffer(wire.HARD_MAX_FRAME)
    buf.extend(golden)
    payload = buf.next_payload()
    assert payload is not None and buf.pending() == 0
    assert decode(payload) == message


def test_a_frame_split_over_reads_waits_for_its_last_byte():
    golden = golden_vectors()["call"]
    buf = wire.FrameBuffer(1024)
    for byte in golden[:-1]:
        buf.extend(bytes([byte]))
        assert buf.next_payload() is None
    buf.extend(golden[-1:])
    assert wire.decode_host(buf.next_payload()) == VECTORS["call"]


def test_two_frames_in_one_read_come_out_in_order():
    buf = wire.FrameBuffer(1024)
    buf.extend(golden_vectors()["cancel"] + golden_vectors()["ping"])
    assert wire.decode_host(buf.next_payload()) == wire.Cancel(3)
    assert wire.decode_host(buf.next_payload()) == wire.HostPing(0x0102030405060708)
    assert buf.next_payload() is None


def test_the_length_is_checked_before_the_payload_arrives():
    buf = wire.FrameBuffer(1024)
    buf.extend((1025).to_bytes(4, "little"))
    with pytest.raises(wire.WireError, match="over the limit"):
        buf.next_payload()


@pytest.mark.parametrize("payload, reason", [
    (b"", "needs 4 bytes"),
    (b"\x09\x00\x00\x00", "unknown HostMessage variant 9"),
    (b"\x02\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00\x00", "left over"),
    (b"\x02\x00\x00\x00\x03\x00\x00", "needs 8 bytes"),
    # Call whose method claims 2^60 bytes: refused, not allocated.
    (b"\x01\x00\x00\x00" + b"\x01" + b"\x00" * 7 + (1 << 60).to_bytes(8, "little"), "needs"),
])
def test_bad_host_payloads_are_refused(payload, reason):
    with pytest.raises(wire.WireError, match=reason):
        wire.decode_host(payload)


@pytest.mark.parametrize("text", [
    b"\xc0\xaf",  # overlong '/'
    b"\xed\xa0\x80",  # a UTF-16 surrogate
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xf5\x80\x80\x80",  # lead byte f5
    b"ab\xe2\x82",  # cut short
])
def test_a_method_that_is_not_utf8_is_refused(text):
    payload = (b"\x01\x00\x00\x00" + (1).to_bytes(8, "little") + len(text).to_bytes(8, "little")
               + text + (0).to_bytes(8, "little") + (0).to_bytes(8, "little"))
    with pytest.raises(wire.WireError, match="not valid UTF-8"):
        wire.decode_host(payload)


@pytest.mark.parametrize("cut", [1, 8, 9, 20])
def test_a_call_cut_short_or_padded_is_refused(cut):
    golden = wire.encode(VECTORS["call"])
    with pytest.raises(wire.WireError):
        wire.decode_host(golden[:-cut])
    with pytest.raises(wire.WireError, match="left over"):
        wire.decode_host(golden + b"\x00" * cut)


def test_nul_is_a_valid_character():
    call = wire.Call(1, "a\x00b", b"", 0)
    assert wire.decode_host(wire.encode(call)) == call


def test_strings_the_plugin_sends_are_always_utf8():
    # A lone surrogate (from surrogateescape, say) cannot reach the wire.
    log = wire.Log(wire.LOG_INFO, "bad \udcff byte")
    decoded = wire.decode_plugin(wire.encode(log))
    assert decoded.message == "bad ? byte"
