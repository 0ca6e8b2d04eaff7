#!/usr/bin/env python3
"""Drives the c-echo binary directly over a socketpair on fd 3, playing the
host, for what `corral run` cannot provoke: batched calls, Ping, Cancel,
Shutdown, frames split across writes, and every kind of bad frame.

Usage: wire_test.py PATH_TO_C_ECHO_BINARY
"""

import os
import socket
import struct
import subprocess
import sys

BINARY = sys.argv[1]
OUR_MAX_FRAME = 1 << 20
EX_PROTOCOL = 76


def u16(v):
    return struct.pack("<H", v)


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def blob(b):
    return u64(len(b)) + b


def frame(payload):
    return u32(len(payload)) + payload


def init(version=1, max_frame=4096, config=b"{}"):
    limits = u64(16 << 20) + u64(5000) + u64(2) + u64(16)
    return frame(u32(0) + u16(version) + u32(max_frame) + blob(config) + limits)


def call(id_, method, data, timeout_ms=5000):
    return frame(u32(1) + u64(id_) + blob(method) + blob(data) + u64(timeout_ms))


def cancel(id_):
    return frame(u32(2) + u64(id_))


def ping(nonce):
    return frame(u32(3) + u64(nonce))


def shutdown(grace_ms=1000):
    return frame(u32(4) + u32(grace_ms))


def host_pong(nonce):
    return frame(u32(5) + u64(nonce))


class Plugin:
    def __init__(self):
        host, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock = host
        self.sock.settimeout(10)
        self.buf = b""
        self.proc = subprocess.Popen(
            [BINARY],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # Python's fds are close-on-exec; dup2 makes only fd 3 survive.
            close_fds=False,
            preexec_fn=lambda: os.dup2(child.fileno(), 3),
        )
        child.close()

    def send(self, data):
        self.sock.sendall(data)

    def read_frame(self):
        """The next payload, or None at a clean end of stream."""
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack_from("<I", self.buf)
                if len(self.buf) >= 4 + n:
                    payload, self.buf = self.buf[4 : 4 + n], self.buf[4 + n :]
                    return payload
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                assert self.buf == b"", f"stream ended inside a frame: {self.buf!r}"
                return None
            self.buf += chunk

    def handshake(self, **init_args):
        hello = self.read_frame()
        expected = (
            u32(0)
            + b"CRRL"
            + u64(1)
            + u16(1)
            + blob(b"c-echo")
            + blob(b"0.1.0")
            + u32(OUR_MAX_FRAME)
        )
        assert hello == expected, f"Hello: {hello.hex()} != {expected.hex()}"
        self.send(init(**init_args))
        ready = self.read_frame()
        assert ready == u32(1), f"Ready: {ready!r}"
        log = self.read_frame()
        max_frame = init_args.get("max_frame", 4096)
        expected_log = (
            u32(3)
            + u32(2)
            + blob(b"c-echo 0.1.0 started")
            + u64(2)
            + blob(b"protocol_version")
            + blob(b"1")
            + blob(b"max_frame")
            + blob(str(max_frame).encode())
        )
        assert log == expected_log, f"Log: {log!r}"

    def finish(self, status, stderr_has=None):
        """Waits for the exit and checks that nothing more was written."""
        rest = self.read_frame()
        assert rest is None, f"unexpected frame after the end: {rest!r}"
        code = self.proc.wait(timeout=10)
        err = self.proc.stderr.read().decode()
        assert code == status, f"exit status {code}, expected {status}; stderr: {err}"
        if stderr_has is not None:
            assert stderr_has in err, f"stderr {err!r} lacks {stderr_has!r}"
        self.sock.close()


def ok(id_, output):
    return u32(2) + u64(id_) + u32(0) + blob(output)


def err(id_, code, message):
    return u32(2) + u64(id_) + u32(1) + blob(code) + blob(message)


UNKNOWN = b"; this plugin has echo, reverse, upper and info"


def test_methods_batched():
    p = Plugin()
    p.handshake()
    # Everything in one write; the replies come back in order.
    p.send(
        call(1, b"echo", b'"hello"')
        + call(2, b"reverse", b'"hello"')
        + call(3, b"upper", b'"hello, World"')
        + call(4, b"info", b"null")
        + call(5, b"frobnicate", b"{}")
        + ping(0x0102030405060708)
        + cancel(1)
        + host_pong(42)
        + call(6, b"echo", b"")
        + call(7, b"info", b"")
    )
    expected = [
        ok(1, b'"hello"'),
        ok(2, b'"olleh"'),
        ok(3, b'"HELLO, WORLD"'),
        ok(4, b'{"protocol_version":1,"max_frame":4096,"calls":4}'),
        err(5, b"unknown_method", b"no method `frobnicate`" + UNKNOWN),
        u32(5) + u64(0x0102030405060708),
        ok(6, b""),
        ok(7, b'{"protocol_version":1,"max_frame":4096,"calls":7}'),
    ]
    for want in expected:
        got = p.read_frame()
        assert got == want, f"got {got!r}, expected {want!r}"
    p.send(shutdown())
    p.finish(0)


def test_frame_split_byte_by_byte():
    p = Plugin()
    p.handshake()
    for b in call(9, b"upper", b"abc\xc3\xa9z"):
        p.send(bytes([b]))
    assert p.read_frame() == ok(9, b"ABC\xc3\xa9Z")
    p.sock.shutdown(socket.SHUT_WR)
    p.finish(0)


def test_largest_frame():
    p = Plugin()
    p.handshake(max_frame=OUR_MAX_FRAME)
    overhead = len(call(1, b"reverse", b"")) - 4
    data = bytes(range(256)) * ((OUR_MAX_FRAME - overhead) // 256)
    data += b"x" * (OUR_MAX_FRAME - overhead - len(data))
    c = call(1, b"reverse", data)
    assert len(c) == 4 + OUR_MAX_FRAME
    p.send(c)
    assert p.read_frame() == ok(1, data[::-1])
    p.send(shutdown())
    p.finish(0)


def test_long_unknown_method_at_small_max_frame():
    p = Plugin()
    p.handshake(max_frame=256)
    p.send(call(1, b"m" * 200, b""))
    assert p.read_frame() == err(
        1, b"unknown_method", b"no such method (its name is too long to repeat)"
    )
    p.send(shutdown())
    p.finish(0)


def test_eof_before_init():
    p = Plugin()
    assert p.read_frame() is not None  # Hello
    p.sock.shutdown(socket.SHUT_WR)
    p.finish(0)


def bad(description, after_handshake, data, stderr_has, **init_args):
    p = Plugin()
    if after_handshake:
        p.handshake(**init_args)
    else:
        assert p.read_frame() is not None  # Hello
    p.send(data)
    p.sock.shutdown(socket.SHUT_WR)
    try:
        p.finish(EX_PROTOCOL, stderr_has)
    except AssertionError as e:
        raise AssertionError(f"{description}: {e}") from None


def test_bad_frames():
    cases = [
        ("frame over Init.max_frame", True, u32(4097), "exceeds the limit of 4096"),
        ("frame over the handshake limit", False, u32((1 << 20) + 1), "exceeds the limit"),
        ("unknown variant", True, frame(u32(6)), "unknown HostMessage variant 6"),
        ("second Init", True, init(), "a second Init"),
        ("no variant", True, frame(b"\x01\x00"), "too short"),
        ("Cancel with bytes left over", True, frame(u32(2) + u64(1) + b"\x00\x00"), "2 bytes left over"),
        ("end of stream inside a frame", True, call(1, b"echo", b"x")[:-3], "inside a frame"),
        (
            "method length past the end",
            True,
            frame(u32(1) + u64(1) + u64(1 << 40)),
            "runs past the end",
        ),
        ("method not UTF-8", True, call(1, b"ech\xff", b""), "not valid UTF-8"),
        ("overlong UTF-8", True, call(1, b"\xc0\xaf", b""), "not valid UTF-8"),
        ("surrogate in UTF-8", True, call(1, b"\xed\xa0\x80", b""), "not valid UTF-8"),
        ("truncated UTF-8", True, call(1, b"a\xe2\x82", b""), "not valid UTF-8"),
        ("Ping with a byte left over", True, frame(u32(3) + u64(1) + b"\x00"), "left over"),
        ("Shutdown too short", True, frame(u32(4) + b"\x00\x00"), "runs past the end"),
        ("Call instead of Init", False, call(1, b"echo", b""), "expected Init"),
        ("Init with version 2", False, init(version=2), "did not offer"),
        ("Init over our max_frame", False, init(max_frame=(1 << 20) + 1), "more than our"),
        ("Init under 256", False, init(max_frame=64), "below"),
        ("Init with a byte left over", False, frame(init()[4:] + b"\x00"), "1 bytes left over"),
    ]
    for description, after, data, stderr_has in cases:
        bad(description, after, data, stderr_has)


def main():
    tests = [
        test_methods_batched,
        test_frame_split_byte_by_byte,
        test_largest_frame,
        test_long_unknown_method_at_small_max_frame,
        test_eof_before_init,
        test_bad_frames,
    ]
    for t in tests:
        t()
        print(f"ok   wire: {t.__name__}")


if __name__ == "__main__":
    main()
