"""The channel to the host: the connected socket on fd 3, read by the serve
loop and written by every thread that has a frame to send.

Writes are whole frames under one lock, so frames from concurrent calls,
logs and pongs never interleave. The host going away (EPIPE, ECONNRESET)
ends the process with status 0, as PROTOCOL.md section 5 asks; a broken
protocol ends it with 76 (EX_PROTOCOL) after taking the write lock, so not
one more byte reaches the host.
"""

from __future__ import annotations

import os
import socket
import sys
from _thread import allocate_lock

from . import wire

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at start-up: it costs time
    from typing import NoReturn

#: sysexits.h codes, as the Rust SDK uses them.
EX_PROTOCOL = 76
EX_IOERR = 74
EX_CONFIG = 78

#: Bytes asked of the socket per read: a batch larger than this takes a
#: few reads; an idle plugin keeps its buffers small.
READ_CHUNK = 64 * 1024

CHANNEL_FD = 3


class HostGone(Exception):
    """End of stream between frames: the host is done with the plugin."""


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._write_lock = allocate_lock()
        self._inbox = wire.FrameBuffer(wire.HANDSHAKE_MAX_FRAME)
        #: Largest payload the plugin may send now: the handshake limit
        #: until Init, then the smaller of it and Init.max_frame until
        #: Ready, then Init.max_frame.
        self.send_limit = wire.HANDSHAKE_MAX_FRAME
        self._dead = False

    @classmethod
    def from_fd(cls, fd: int = CHANNEL_FD) -> Channel:
        try:
            sock = socket.socket(fileno=fd)
        except OSError as e:
            die(EX_CONFIG, f"the channel fd {fd} is not a usable socket: {e}")
        # Subprocesses (with `exec = true`) must not speak for the plugin.
        os.set_inheritable(fd, False)
        sock.setblocking(True)
        return cls(sock)

    def set_read_limit(self, max_frame: int) -> None:
        self._inbox.max_frame = max_frame

    # -- writing

    def send(self, message: wire.Message) -> bool:
        """Sends one message; False (and nothing sent) when it would exceed
        the frame limit in force. Exits at once when the host is gone."""
        payload = wire.encode(message)
        if len(payload) > self.send_limit:
            return False
        data = wire.frame(payload)
        with self._write_lock:
            if self._dead:
                return True
            try:
                self._sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                # The host is gone: the same as end of stream. The lock
                # stays held, so nobody writes on the way out.
                die(0)
            except OSError as e:
                die(EX_IOERR, f"writing to the host: {e}")
        return True

    # -- reading

    def receive(self) -> wire.Message:
        """The next message from the host. Raises HostGone at end of stream
        between frames; a bad frame ends the process as a protocol error."""
        while True:
            try:
                payload = self._inbox.next_payload()
            except wire.WireError as e:
                self.violation(str(e))
            if payload is not None:
                try:
                    return wire.decode_host(payload)
                except wire.WireError as e:
                    self.violation(f"undecodable frame from the host: {e}")
            try:
                data = self._sock.recv(READ_CHUNK)
            except ConnectionResetError:
                data = b""
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            except OSError as e:
                self._exit_now(EX_IOERR, f"reading from the host: {e}")
            if not data:
                if self._inbox.pending():
                    self.violation("end of stream inside a frame")
                raise HostGone()
            self._inbox.extend(data)

    # -- ending

    def violation(self, reason: str) -> NoReturn:
        """The host broke the protocol: nothing more is written, exit 76."""
        self._exit_now(EX_PROTOCOL, f"protocol violation: {reason}")

    def _exit_now(self, code: int, why: str = "") -> NoReturn:
        # Taking the write lock first keeps every other thread from writing
        # after the decision. A writer blocked on a full socket holds it; the
        # timeout keeps that from holding the exit too.
        self._write_lock.acquire(timeout=1.0)
        self._dead = True
        die(code, why)


def die(code: int, why: str = "") -> NoReturn:
    """Ends the process now: threads still running handlers are not waited
    for (the host has given up on them, or cannot be trusted any more)."""
    if why:
        try:
            sys.stderr.write(f"corral: {why}\n")
        except Exception:  # noqa: BLE001 - stderr gone; nothing left to tell
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(code)


