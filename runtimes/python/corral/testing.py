"""A test host for Python plugins: starts ``corral_bootstrap.py <entry>``
with one end of a socketpair on its fd 3, as the supervisor does (without
the sandbox), and plays the host's side of the protocol.

    from corral.testing import TestHost

    host = TestHost("plugin.py")
    host.handshake(config=b'{"greeting": "hi"}')
    reply = host.roundtrip(1, "greet", b'{"name": "Ada"}')
    assert reply.output == b'{"greeting":"hi, Ada!"}'
    host.close()
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from . import wire

#: The bootstrap corral runs Python plugins with.
BOOTSTRAP = Path(__file__).resolve().parent.parent / "corral_bootstrap.py"
#: How long any single wait may take before it fails (generous: nothing
#: here is timed).
WAIT = 30.0


class TestHost:
    """A plugin process and the host's end of its channel."""

    __test__ = False  # not a pytest test class, though it is named like one

    def __init__(self, entry: Path | str, *, env: dict[str, str] | None = None,
                 python: str | None = None) -> None:
        python = python or sys.executable
        self.entry = str(entry)
        self.sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(WAIT)
        self._buf = wire.FrameBuffer(wire.HARD_MAX_FRAME)
        self.logs: list[wire.Log] = []
        self.events: list[wire.Event] = []
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()
        environment = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "CORRAL_CHANNEL_FD": "3",
        }
        environment.update(env or {})
        # posix_spawn's dup2 puts the child's end on fd 3 exactly; every
        # other descriptor of this process is close-on-exec.
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, self._out.fileno(), 1),
            (os.POSIX_SPAWN_DUP2, self._err.fileno(), 2),
            (os.POSIX_SPAWN_DUP2, child.fileno(), 3),
        ]
        self.pid = os.posix_spawn(python, [python, "-I", "-B", str(BOOTSTRAP), self.entry],
                                  environment, file_actions=actions)
        child.close()
        self.returncode: int | None = None

    # -- raw bytes

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_raw_frame(self) -> bytes:
        """The next whole frame as it came, length prefix included."""
        while True:
            if self._buf.pending() >= 4:
                n = wire.frame_length(self._peek(4))
                if self._buf.pending() >= 4 + n:
                    payload = self._buf.next_payload()
                    assert payload is not None
                    return wire.frame(payload)
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(f"the plugin closed the channel; stderr:\n{self.stderr()}")
            self._buf.extend(data)

    def _peek(self, n: int) -> bytes:
        return bytes(self._buf._buf[:n])

    # -- messages

    def send(self, message: wire.Message) -> None:
        self.send_raw(wire.encode_frame(message))

    def read(self) -> wire.Message:
        return wire.decode_plugin(self.read_raw_frame()[4:])

    def read_skipping_logs(self) -> wire.Message:
        while True:
            m = self.read()
            if isinstance(m, wire.Log):
                self.logs.append(m)
            elif isinstance(m, wire.Event):
                self.events.append(m)
            else:
                return m

    def wait_log(self, message: str) -> wire.Log:
        """Reads until a Log with ``message`` arrives (a handler started)."""
        while True:
            m = self.read()
            assert isinstance(m, (wire.Log, wire.Event)), (m, self.stderr())
            if isinstance(m, wire.Event):
                self.events.append(m)
                continue
            self.logs.append(m)
            if m.message == message:
                return m

    def handshake(self, *, config: bytes = b"{}", max_frame: int = 1 << 20,
                  limits: wire.InitLimits | None = None, version: int = 2) -> wire.Hello:
        """Hello -> Init -> Ready; ``version`` is the protocol version the
        host chooses (2 has host services)."""
        hello = self.read_skipping_logs()
        assert isinstance(hello, wire.Hello), (hello, self.stderr())
        assert version in hello.versions, (version, hello.versions)
        self.send(wire.Init(version, max_frame, config,
                            limits or wire.InitLimits(64 << 20, 10_000, 16, 64)))
        ready = self.read_skipping_logs()
        assert isinstance(ready, wire.Ready), (ready, self.stderr())
        return hello

    def call(self, id: int, method: str, input: bytes = b"null", timeout_ms: int = 10_000) -> None:
        self.send(wire.Call(id, method, input, timeout_ms))

    def replies(self, count: int) -> dict[int, wire.Reply]:
        """The next ``count`` replies by call id (logs and events kept)."""
        got: dict[int, wire.Reply] = {}
        while len(got) < count:
            m = self.read_skipping_logs()
            assert isinstance(m, wire.Reply), (m, self.stderr())
            assert m.id not in got, f"two replies for call {m.id}"
            got[m.id] = m
        return got

    def reply(self, id: int) -> wire.Reply:
        (only,) = self.replies(1).values()
        assert only.id == id, (only, id)
        return only

    def roundtrip(self, id: int, method: str, input: bytes = b"null") -> wire.Reply:
        self.call(id, method, input)
        return self.reply(id)

    # -- host services

    def request(self) -> wire.Request:
        """The next Request (logs and events kept)."""
        m = self.read_skipping_logs()
        assert isinstance(m, wire.Request), (m, self.stderr())
        return m

    def respond(self, request: wire.Request, body: object = None, *,
                error: tuple[str, str] | None = None,
                details: dict[str, object] | None = None) -> None:
        """Answers ``request`` with ``body`` (JSON, ``{}`` for None), or
        with ``error`` = (code, message) and ``details`` (the API's error
        object; by default just the code and message)."""
        import json

        if error is not None:
            code, message = error
            obj = {"code": code, "message": message, **(details or {})}
            self.send(wire.Response(request.id, error=(code, message, json.dumps(obj).encode())))
        else:
            self.send(wire.Response(request.id, body=json.dumps(
                {} if body is None else body).encode()))

    def deliver(self, topic: str, payload: object, sender: str = "client") -> None:
        import json

        self.send(wire.Deliver(topic, sender, json.dumps(payload).encode()))

    # -- the process

    def wait_exit(self, within: float = WAIT) -> int:
        deadline = time.monotonic() + within
        while self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"the plugin did not exit within {within}s; stderr:\n"
                                     f"{self.stderr()}")
            time.sleep(0.01)
        return self.returncode

    def channel_closed(self) -> bool:
        """True when the plugin's end of the channel is closed (it exited)
        and it sent nothing more."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def stderr(self) -> str:
        self._err.seek(0)
        return self._err.read().decode("utf-8", "replace")

    def stdout(self) -> str:
        self._out.seek(0)
        return self._out.read().decode("utf-8", "replace")

    def close(self) -> None:
        self.sock.close()
        if self.returncode is None:
            try:
                self.wait_exit(5)
            except AssertionError:
                os.kill(self.pid, 9)
                self.wait_exit()
        self._out.close()
        self._err.close()
