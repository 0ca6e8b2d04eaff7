"""HTTP/1.1 on corrald's Unix socket, by hand: requests are small and
answers are JSON, a byte stream of newline-delimited events, or metrics
text. The sync client uses ``http.client`` over an ``AF_UNIX`` socket; the
asyncio client uses the parser below on ``asyncio.open_unix_connection``.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
from typing import Any
from urllib.parse import quote, urlencode

from .errors import CorralError, DaemonUnavailable, error_from_body

#: Where corrald listens unless told otherwise.
DEFAULT_SOCKET = "/run/corral/corral.sock"
#: The environment variable naming the socket (as for the CLI).
SOCKET_ENV = "CORRAL_SOCKET"
#: Largest answer header block and body this client reads (a plugin list
#: of thousands of plugins fits; a broken peer cannot fill memory).
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 256 * 1024 * 1024


def socket_path(socket_arg: str | os.PathLike[str] | None) -> str:
    """The socket: the argument, else $CORRAL_SOCKET, else the default."""
    if socket_arg is not None:
        return os.fspath(socket_arg)
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


def path_of(*parts: str, query: dict[str, Any] | None = None) -> str:
    """``/v1/...`` with each part escaped, and a query string."""
    path = "/" + "/".join(quote(p, safe="") if i else p for i, p in enumerate(parts))
    if query:
        items = {k: ("true" if v is True else "false" if v is False else v)
                 for k, v in query.items() if v is not None}
        if items:
            path += "?" + urlencode(items)
    return path


def json_body(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def check(status: int, body: bytes) -> None:
    """Raises the typed error when ``status`` is not a success."""
    if status >= 400:
        raise error_from_body(status, body)


def parse_json(status: int, body: bytes) -> Any:
    check(status, body)
    try:
        return json.loads(body.decode("utf-8"))
    except ValueError as e:
        raise CorralError(f"corrald answered {status} with a body that is not JSON: {e}",
                          code="bad_answer", status=status) from None


# ---------------------------------------------------------------- sync


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` on a Unix socket."""

    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("corral", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except OSError as e:
            sock.close()
            raise DaemonUnavailable(f"cannot reach corrald at {self.socket_path}: {e}") from e
        self.sock = sock


def request(path: str, timeout: float | None, method: str, target: str,
            body: bytes | None = None, content_type: str | None = None
            ) -> tuple[int, bytes]:
    """One request on its own connection: (status, body)."""
    conn = UnixHTTPConnection(path, timeout)
    try:
        response = open_response(conn, method, target, body, content_type)
        try:
            data = response.read(MAX_BODY_BYTES + 1)
        except (http.client.HTTPException, ConnectionError) as e:
            raise DaemonUnavailable(f"corrald broke off its answer to {method} {target}: "
                                    f"{e!r}") from e
        if len(data) > MAX_BODY_BYTES:
            raise CorralError(f"the answer to {method} {target} is over {MAX_BODY_BYTES} bytes",
                              code="bad_answer", status=response.status)
        if response.length:  # read(amt) stops short at end of stream instead of failing
            raise DaemonUnavailable(f"corrald broke off its answer to {method} {target} "
                                    f"{response.length} bytes before its end")
        return response.status, data
    finally:
        conn.close()


def open_response(conn: UnixHTTPConnection, method: str, target: str,
                  body: bytes | None = None, content_type: str | None = None
                  ) -> http.client.HTTPResponse:
    headers = {"Host": "corral", "Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    try:
        conn.request(method, target, body=body, headers=headers)
        return conn.getresponse()
    except DaemonUnavailable:
        raise
    except (ConnectionError, http.client.HTTPException) as e:
        raise DaemonUnavailable(f"corrald closed the connection without answering "
                                f"{method} {target}: {e}") from e


# ---------------------------------------------------------------- asyncio


class AsyncResponse:
    """An answer read from an asyncio stream: status, headers, and a body
    read whole (``read``) or line by line (``readline``, for events)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 status: int, headers: dict[str, str]) -> None:
        self._reader = reader
        self._writer = writer
        self.status = status
        self.headers = headers
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        self._left: int | None = int(length) if length is not None else None
        self._chunk_left = 0
        self._done = False
        self._pending = b""

    async def _read_some(self) -> bytes:
        """The next piece of the body; b"" at its end."""
        if self._done:
            return b""
        if self._chunked:
            if self._chunk_left == 0:
                size_line = await self._reader.readline()
                if not size_line:
                    raise DaemonUnavailable("corrald closed the connection inside an answer")
                try:
                    size = int(size_line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise CorralError(f"bad chunk size {size_line[:40]!r}",
                                      code="bad_answer") from None
                if size == 0:
                    await self._reader.readline()  # the empty trailer
                    self._done = True
                    return b""
                self._chunk_left = size
            data = await self._reader.read(min(self._chunk_left, 65536))
            if not data:
                raise DaemonUnavailable("corrald closed the connection inside an answer")
            self._chunk_left -= len(data)
            if self._chunk_left == 0:
                await self._reader.readline()  # CRLF after the chunk
            return data
        if self._left is not None:
            if self._left == 0:
                self._done = True
                return b""
            data = await self._reader.read(min(self._left, 65536))
            if not data:
                raise DaemonUnavailable("corrald closed the connection inside an answer")
            self._left -= len(data)
            return data
        data = await self._reader.read(65536)  # until the connection closes
        if not data:
            self._done = True
        return data

    async def read(self, limit: int = MAX_BODY_BYTES) -> bytes:
        parts = [self._pending]
        self._pending = b""
        size = len(parts[0])
        while True:
            data = await self._read_some()
            if not data:
                return b"".join(parts)
            size += len(data)
            if size > limit:
                raise CorralError(f"the answer is over {limit} bytes", code="bad_answer",
                                  status=self.status)
            parts.append(data)

    async def readline(self, limit: int = 16 * 1024 * 1024) -> bytes:
        """The next line of the body with its newline; b"" at the end."""
        while b"\n" not in self._pending:
            data = await self._read_some()
            if not data:
                line, self._pending = self._pending, b""
                return line
            self._pending += data
            if len(self._pending) > limit:
                raise CorralError(f"a line of the answer is over {limit} bytes",
                                  code="bad_answer", status=self.status)
        line, _, self._pending = self._pending.partition(b"\n")
        return line + b"\n"

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def open_async_response(path: str, method: str, target: str, body: bytes | None = None,
                              content_type: str | None = None) -> AsyncResponse:
    try:
        reader, writer = await asyncio.open_unix_connection(path, limit=MAX_HEADER_BYTES)
    except OSError as e:
        raise DaemonUnavailable(f"cannot reach corrald at {path}: {e}") from e
    lines = [f"{method} {target} HTTP/1.1", "Host: corral", "Accept: application/json",
             "Connection: close"]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
        if content_type:
            lines.append(f"Content-Type: {content_type}")
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            raise DaemonUnavailable(f"corrald closed the connection without answering "
                                    f"{method} {target}")
        parts = status_line.decode("latin-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise CorralError(f"not an HTTP answer: {status_line[:80]!r}", code="bad_answer")
        headers: dict[str, str] = {}
        size = 0
        while True:
            line = await reader.readline()
            size += len(line)
            if size > MAX_HEADER_BYTES:
                raise CorralError("the answer's headers are too large", code="bad_answer")
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
        writer.close()
        raise DaemonUnavailable(f"corrald closed the connection: {e}") from e
    except BaseException:
        writer.close()
        raise
    return AsyncResponse(reader, writer, int(parts[1]), headers)


async def async_request(path: str, timeout: float | None, method: str, target: str,
                        body: bytes | None = None, content_type: str | None = None
                        ) -> tuple[int, bytes]:
    async def run() -> tuple[int, bytes]:
        response = await open_async_response(path, method, target, body, content_type)
        try:
            return response.status, await response.read()
        finally:
            await response.close()

    if timeout is None:
        return await run()
    return await asyncio.wait_for(run(), timeout)
