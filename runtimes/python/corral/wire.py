"""The wire format of protocol/PROTOCOL.md, versions 1 and 2: frames and
messages (version 2 adds Request, Response and Deliver, section 9).

A frame is a little-endian ``u32`` payload length, then the payload: one
message in bincode 2's fixed-int little-endian encoding (section 3). Both
directions are here, the plugin's and the host's, so that the serve loop
and the tests' fake host share one codec; the golden vectors of
PROTOCOL.md section 6 check it byte for byte.

Decoding never trusts a length: every length field is checked against the
bytes actually left before anything is sliced, and a payload must be used
up exactly. Python's strict ``utf-8`` codec is RFC 3629 UTF-8 (no overlong
forms, no surrogates, nothing above U+10FFFF), the definition the
protocol uses.
"""

from __future__ import annotations

import struct

MAGIC = b"CRRL"
#: Protocol versions this package speaks: 2 adds host services.
VERSIONS = (1, 2)
#: The version that has Request, Response and Deliver.
SERVICES_VERSION = 2
#: Largest payload during the handshake (Hello, Init, and what the plugin
#: sends until Ready).
HANDSHAKE_MAX_FRAME = 1 << 20
#: Largest payload any peer may negotiate.
HARD_MAX_FRAME = 16 << 20
#: What a plugin announces unless told otherwise (the Rust SDK's default).
DEFAULT_MAX_FRAME = 4 << 20
#: The smallest ``max_frame`` a host accepts in Hello.
MIN_MAX_FRAME = 1024
LENGTH_PREFIX = 4
#: Bytes a Reply adds around its output: variant, id, result variant, length.
REPLY_OVERHEAD = 4 + 8 + 4 + 8

# LogLevel variant indexes.
LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG, LOG_TRACE = range(5)
LOG_LEVEL_NAMES = ("error", "warn", "info", "debug", "trace")

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")
_U64_PAIR = struct.Struct("<QQ")


class WireError(ValueError):
    """A frame or payload that does not decode: a protocol violation."""


# ---------------------------------------------------------------- messages


class Message:
    """A message: its fields in wire order, compared by value."""

    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and all(
            getattr(self, f) == getattr(other, f) for f in self.__slots__
        )

    def __hash__(self) -> int:  # messages are values, but mutable ones
        raise TypeError(f"{type(self).__name__} is not hashable")

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__slots__)
        return f"{type(self).__name__}({fields})"


# Host to plugin (HostMessage).


class InitLimits(Message):
    __slots__ = ("memory_bytes", "call_timeout_ms", "pids", "open_files")

    def __init__(self, memory_bytes: int = 0, call_timeout_ms: int = 0, pids: int = 0,
                 open_files: int = 0) -> None:
        self.memory_bytes = memory_bytes
        self.call_timeout_ms = call_timeout_ms
        self.pids = pids
        self.open_files = open_files


class Init(Message):
    __slots__ = ("version", "max_frame", "config", "limits")

    def __init__(self, version: int, max_frame: int, config: bytes, limits: InitLimits) -> None:
        self.version = version
        self.max_frame = max_frame
        self.config = config
        self.limits = limits


class Call(Message):
    __slots__ = ("id", "method", "input", "timeout_ms")

    def __init__(self, id: int, method: str, input: bytes, timeout_ms: int) -> None:
        self.id = id
        self.method = method
        self.input = input
        self.timeout_ms = timeout_ms


class Cancel(Message):
    __slots__ = ("id",)

    def __init__(self, id: int) -> None:
        self.id = id


class HostPing(Message):
    __slots__ = ("nonce",)

    def __init__(self, nonce: int) -> None:
        self.nonce = nonce


class Shutdown(Message):
    __slots__ = ("grace_ms",)

    def __init__(self, grace_ms: int) -> None:
        self.grace_ms = grace_ms


class HostPong(Message):
    __slots__ = ("nonce",)

    def __init__(self, nonce: int) -> None:
        self.nonce = nonce


class Response(Message):
    """The host's answer to a Request: ``body`` (JSON bytes) for
    ``ServiceResult::Ok``, or ``error`` as ``(code, message, details)``
    (details: the API's whole error object, JSON bytes)."""

    __slots__ = ("id", "body", "error")

    def __init__(self, id: int, body: bytes | None = None,
                 error: tuple[str, str, bytes] | None = None) -> None:
        if (body is None) == (error is None):
            raise ValueError("a Response has exactly one of body and error")
        self.id = id
        self.body = body
        self.error = error


class Deliver(Message):
    """An event from a topic the plugin subscribed to."""

    __slots__ = ("topic", "sender", "payload")

    def __init__(self, topic: str, sender: str, payload: bytes) -> None:
        self.topic = topic
        #: The publishing plugin's name, or ``client`` (``from`` on the wire).
        self.sender = sender
        self.payload = payload


# Plugin to host (PluginMessage).


class Hello(Message):
    __slots__ = ("magic", "versions", "name", "version", "max_frame")

    def __init__(self, name: str, version: str, max_frame: int,
                 versions: tuple[int, ...] | list[int] = VERSIONS, magic: bytes = MAGIC) -> None:
        self.magic = magic
        self.versions = list(versions)
        self.name = name
        self.version = version
        self.max_frame = max_frame


class Ready(Message):
    __slots__ = ()


class Reply(Message):
    """``error`` is ``(code, message)`` for ``CallResult::Err``; otherwise
    ``output`` holds the ``Ok`` bytes."""

    __slots__ = ("id", "output", "error")

    def __init__(self, id: int, output: bytes | None = None,
                 error: tuple[str, str] | None = None) -> None:
        if (output is None) == (error is None):
            raise ValueError("a Reply has exactly one of output and error")
        self.id = id
        self.output = output
        self.error = error


class Log(Message):
    __slots__ = ("level", "message", "fields")

    def __init__(self, level: int, message: str,
                 fields: list[tuple[str, str]] | None = None) -> None:
        self.level = level
        self.message = message
        self.fields = list(fields or [])


class Event(Message):
    __slots__ = ("topic", "payload")

    def __init__(self, topic: str, payload: bytes) -> None:
        self.topic = topic
        self.payload = payload


class Pong(Message):
    __slots__ = ("nonce",)

    def __init__(self, nonce: int) -> None:
        self.nonce = nonce


class PluginPing(Message):
    __slots__ = ("nonce",)

    def __init__(self, nonce: int) -> None:
        self.nonce = nonce


class SandboxFailure(Message):
    __slots__ = ("step", "errno", "message")

    def __init__(self, step: str, errno: int, message: str) -> None:
        self.step = step
        self.errno = errno
        self.message = message


class Request(Message):
    """A request for a host service (version 2): ``payload`` is JSON."""

    __slots__ = ("id", "call_id", "service", "operation", "payload")

    def __init__(self, id: int, call_id: int, service: str, operation: str,
                 payload: bytes) -> None:
        self.id = id
        self.call_id = call_id
        self.service = service
        self.operation = operation
        self.payload = payload


# ---------------------------------------------------------------- encoding


def _blob(data: bytes) -> bytes:
    return _U64.pack(len(data)) + data


def _text(s: str) -> bytes:
    # A Python str may hold lone surrogates (from surrogateescape, say),
    # which are not UTF-8: they become "?" rather than a frame the host
    # rejects.
    return _blob(s.encode("utf-8", "replace"))


def encode(message: Message) -> bytes:
    """The payload of ``message`` (without the length prefix)."""
    m = message
    if isinstance(m, Reply):
        head = _U32.pack(2) + _U64.pack(m.id)
        if m.error is not None:
            return head + _U32.pack(1) + _text(m.error[0]) + _text(m.error[1])
        return head + _U32.pack(0) + _blob(bytes(m.output or b""))
    if isinstance(m, Call):
        return (_U32.pack(1) + _U64.pack(m.id) + _text(m.method) + _blob(bytes(m.input))
                + _U64.pack(m.timeout_ms))
    if isinstance(m, Log):
        out = [_U32.pack(3), _U32.pack(m.level), _text(m.message), _U64.pack(len(m.fields))]
        for key, value in m.fields:
            out.append(_text(key))
            out.append(_text(value))
        return b"".join(out)
    if isinstance(m, Hello):
        if len(m.magic) != 4:
            raise ValueError("the magic is 4 bytes")
        return (_U32.pack(0) + bytes(m.magic) + _U64.pack(len(m.versions))
                + b"".join(_U16.pack(v) for v in m.versions) + _text(m.name) + _text(m.version)
                + _U32.pack(m.max_frame))
    if isinstance(m, Ready):
        return _U32.pack(1)
    if isinstance(m, Event):
        return _U32.pack(4) + _text(m.topic) + _blob(bytes(m.payload))
    if isinstance(m, Pong):
        return _U32.pack(5) + _U64.pack(m.nonce)
    if isinstance(m, PluginPing):
        return _U32.pack(6) + _U64.pack(m.nonce)
    if isinstance(m, SandboxFailure):
        return _U32.pack(7) + _text(m.step) + _I32.pack(m.errno) + _text(m.message)
    if isinstance(m, Request):
        return (_U32.pack(8) + _U64_PAIR.pack(m.id, m.call_id) + _text(m.service)
                + _text(m.operation) + _blob(bytes(m.payload)))
    if isinstance(m, Init):
        lim = m.limits
        return (_U32.pack(0) + _U16.pack(m.version) + _U32.pack(m.max_frame) + _blob(m.config)
                + _U64.pack(lim.memory_bytes) + _U64.pack(lim.call_timeout_ms)
                + _U64.pack(lim.pids) + _U64.pack(lim.open_files))
    if isinstance(m, Cancel):
        return _U32.pack(2) + _U64.pack(m.id)
    if isinstance(m, HostPing):
        return _U32.pack(3) + _U64.pack(m.nonce)
    if isinstance(m, Shutdown):
        return _U32.pack(4) + _U32.pack(m.grace_ms)
    if isinstance(m, HostPong):
        return _U32.pack(5) + _U64.pack(m.nonce)
    if isinstance(m, Response):
        head = _U32.pack(6) + _U64.pack(m.id)
        if m.error is not None:
            code, text, details = m.error
            return head + _U32.pack(1) + _text(code) + _text(text) + _blob(bytes(details))
        return head + _U32.pack(0) + _blob(bytes(m.body or b""))
    if isinstance(m, Deliver):
        return _U32.pack(7) + _text(m.topic) + _text(m.sender) + _blob(bytes(m.payload))
    raise TypeError(f"not a protocol message: {m!r}")


def frame(payload: bytes) -> bytes:
    """``payload`` with its length prefix."""
    return _U32.pack(len(payload)) + payload


def encode_frame(message: Message) -> bytes:
    return frame(encode(message))


def frame_length(prefix: bytes | bytearray) -> int:
    return int(_U32.unpack_from(prefix)[0])


# ---------------------------------------------------------------- decoding


class _Reader:
    """A cursor over one payload that refuses to run past its end."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise WireError(
                f"{what}: needs {n} bytes at offset {self.pos} but the payload has "
                f"{len(self.data) - self.pos} left")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def u16(self, what: str) -> int:
        return int(_U16.unpack(self._take(2, what))[0])

    def u32(self, what: str) -> int:
        return int(_U32.unpack(self._take(4, what))[0])

    def i32(self, what: str) -> int:
        return int(_I32.unpack(self._take(4, what))[0])

    def u64(self, what: str) -> int:
        return int(_U64.unpack(self._take(8, what))[0])

    def blob(self, what: str) -> bytes:
        n = self.u64(what + " length")
        # A claim, not an allocation size: _take checks it first.
        return bytes(self._take(n, what))

    def text(self, what: str) -> str:
        raw = self.blob(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise WireError(f"{what} is not valid UTF-8: {e}") from None

    def count(self, what: str, min_element: int) -> int:
        n = self.u64(what + " count")
        if n * min_element > len(self.data) - self.pos:
            raise WireError(f"{what}: {n} elements cannot fit in the payload")
        return n

    def end(self, what: str) -> None:
        left = len(self.data) - self.pos
        if left:
            raise WireError(f"{left} bytes left over after {what}")


def _decode_call(payload: bytes) -> Call | None:
    """The common case, Call, with a few ``unpack_from``s; None when the
    payload is not a well-formed Call (the checked path then says why)."""
    n = len(payload)
    if n < 36:
        return None
    call_id, method_len = _U64_PAIR.unpack_from(payload, 4)
    end_method = 20 + method_len
    if end_method + 16 > n:
        return None
    (input_len,) = _U64.unpack_from(payload, end_method)
    end_input = end_method + 8 + input_len
    if end_input + 8 != n:
        return None
    try:
        method = payload[20:end_method].decode("utf-8")
    except UnicodeDecodeError:
        return None
    (timeout_ms,) = _U64.unpack_from(payload, end_input)
    return Call(call_id, method, payload[end_method + 8:end_input], timeout_ms)


def decode_host(payload: bytes) -> Message:
    """A ``HostMessage``: what a plugin reads."""
    if payload[:4] == b"\x01\x00\x00\x00":
        call = _decode_call(payload)
        if call is not None:
            return call
    r = _Reader(payload)
    tag = r.u32("HostMessage variant")
    m: Message
    if tag == 1:
        m = Call(r.u64("Call.id"), r.text("Call.method"), r.blob("Call.input"),
                 r.u64("Call.timeout_ms"))
    elif tag == 2:
        m = Cancel(r.u64("Cancel.id"))
    elif tag == 3:
        m = HostPing(r.u64("Ping.nonce"))
    elif tag == 0:
        version = r.u16("Init.version")
        max_frame = r.u32("Init.max_frame")
        config = r.blob("Init.config")
        limits = InitLimits(r.u64("Init.limits.memory_bytes"), r.u64("Init.limits.call_timeout_ms"),
                            r.u64("Init.limits.pids"), r.u64("Init.limits.open_files"))
        m = Init(version, max_frame, config, limits)
    elif tag == 4:
        m = Shutdown(r.u32("Shutdown.grace_ms"))
    elif tag == 5:
        m = HostPong(r.u64("Pong.nonce"))
    elif tag == 6:
        id_ = r.u64("Response.id")
        result = r.u32("ServiceResult variant")
        if result == 0:
            m = Response(id_, body=r.blob("Ok.body"))
        elif result == 1:
            m = Response(id_, error=(r.text("Err.code"), r.text("Err.message"),
                                     r.blob("Err.details")))
        else:
            raise WireError(f"unknown ServiceResult variant {result}")
    elif tag == 7:
        m = Deliver(r.text("Deliver.topic"), r.text("Deliver.from"), r.blob("Deliver.payload"))
    else:
        raise WireError(f"unknown HostMessage variant {tag}")
    r.end(type(m).__name__)
    return m


def decode_plugin(payload: bytes) -> Message:
    """A ``PluginMessage``: what a host reads (the tests' fake host)."""
    r = _Reader(payload)
    tag = r.u32("PluginMessage variant")
    m: Message
    if tag == 0:
        magic = r._take(4, "Hello.magic")
        versions = [r.u16("Hello.versions") for _ in range(r.count("Hello.versions", 2))]
        m = Hello(r.text("Hello.name"), r.text("Hello.version"), 0, versions, bytes(magic))
        m.max_frame = r.u32("Hello.max_frame")
    elif tag == 1:
        m = Ready()
    elif tag == 2:
        id_ = r.u64("Reply.id")
        result = r.u32("CallResult variant")
        if result == 0:
            m = Reply(id_, output=r.blob("Ok.output"))
        elif result == 1:
            m = Reply(id_, error=(r.text("Err.code"), r.text("Err.message")))
        else:
            raise WireError(f"unknown CallResult variant {result}")
    elif tag == 3:
        level = r.u32("Log.level")
        if level > LOG_TRACE:
            raise WireError(f"unknown LogLevel variant {level}")
        message = r.text("Log.message")
        fields = [(r.text("Log.fields key"), r.text("Log.fields value"))
                  for _ in range(r.count("Log.fields", 16))]
        m = Log(level, message, fields)
    elif tag == 4:
        m = Event(r.text("Event.topic"), r.blob("Event.payload"))
    elif tag == 5:
        m = Pong(r.u64("Pong.nonce"))
    elif tag == 6:
        m = PluginPing(r.u64("Ping.nonce"))
    elif tag == 7:
        m = SandboxFailure(r.text("SandboxFailure.step"), r.i32("SandboxFailure.errno"),
                           r.text("SandboxFailure.message"))
    elif tag == 8:
        m = Request(r.u64("Request.id"), r.u64("Request.call_id"), r.text("Request.service"),
                    r.text("Request.operation"), r.blob("Request.payload"))
    else:
        raise WireError(f"unknown PluginMessage variant {tag}")
    r.end(type(m).__name__)
    return m


class FrameBuffer:
    """Bytes read from a stream, from which whole frames are taken.

    The length prefix is checked against ``max_frame`` before the payload
    is waited for, so a peer can never make the reader buffer more than one
    frame's limit (plus one read).
    """

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    def extend(self, data: bytes) -> None:
        self._buf += data

    def pending(self) -> int:
        return len(self._buf)

    def next_payload(self) -> bytes | None:
        """The next whole payload, or None until more bytes arrive."""
        if len(self._buf) < LENGTH_PREFIX:
            return None
        n = frame_length(self._buf)
        if n > self.max_frame:
            raise WireError(f"a frame of {n} bytes is over the limit of {self.max_frame}")
        end = LENGTH_PREFIX + n
        if len(self._buf) < end:
            return None
        payload = bytes(self._buf[LENGTH_PREFIX:end])
        del self._buf[:end]
        return payload
