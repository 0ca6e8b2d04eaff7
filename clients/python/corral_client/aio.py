"""The asyncio client: the same operations as ``Client``, as coroutines,
and the event stream as an async iterator."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from typing import Any

from . import core
from . import transport as http
from .core import PathLike
from .types import (
    CallResult,
    Event,
    Health,
    InstallResult,
    PackageFile,
    PluginDetail,
    PluginSummary,
)


class AsyncClient:
    """corrald's API on its Unix socket, for asyncio.

    ``socket`` and ``timeout`` as for ``Client`` (``timeout`` raises
    ``asyncio.TimeoutError``). Each request opens its own connection, so
    calls may run concurrently (``asyncio.gather``).
    """

    def __init__(self, socket: PathLike | None = None, *,
                 timeout: float | None = None) -> None:
        self.socket = http.socket_path(socket)
        self.timeout = timeout

    async def _request(self, method: str, target: str, body: bytes | None = None,
                       content_type: str | None = None) -> tuple[int, bytes]:
        return await http.async_request(self.socket, self.timeout, method, target, body,
                                        content_type)

    async def _json(self, method: str, target: str, body: bytes | None = None,
                    content_type: str | None = None) -> Any:
        return http.parse_json(*await self._request(method, target, body, content_type))

    async def health(self) -> Health:
        return await self._json("GET", "/v1/health")  # type: ignore[no-any-return]

    async def metrics(self) -> str:
        status, body = await self._request("GET", "/metrics")
        http.check(status, body)
        return body.decode("utf-8")

    async def reload_configuration(self) -> dict[str, Any]:
        return await self._json("POST", "/v1/reload")  # type: ignore[no-any-return]

    async def list(self) -> builtins.list[PluginSummary]:
        return await self._json("GET", "/v1/plugins")  # type: ignore[no-any-return]

    async def info(self, name: str) -> PluginDetail:
        return await self._json(  # type: ignore[no-any-return]
            "GET", http.path_of("v1", "plugins", name))

    async def exists(self, name: str) -> bool:
        from .errors import PluginNotFound

        try:
            await self.info(name)
        except PluginNotFound:
            return False
        return True

    async def policy(self, name: str) -> dict[str, Any]:
        return await self._json(  # type: ignore[no-any-return]
            "GET", http.path_of("v1", "plugins", name, "policy"))

    async def files(self, name: str) -> builtins.list[PackageFile]:
        """``GET /v1/plugins/{name}/files``: the installed package's
        regular files, sorted by path."""
        answer = await self._json("GET", http.path_of("v1", "plugins", name, "files"))
        return answer["files"]  # type: ignore[no-any-return]

    async def file(self, name: str, path: str) -> bytes:
        """``GET /v1/plugins/{name}/files/{path}``: one file's bytes (at
        most 16 MiB); a path outside the package is ``InvalidInput``."""
        status, body = await self._request("GET", core.file_target(name, path))
        http.check(status, body)
        return body

    async def load(self, name: str) -> PluginSummary:
        return await self._json(  # type: ignore[no-any-return]
            "POST", http.path_of("v1", "plugins", name, "load"))

    async def unload(self, name: str) -> PluginSummary:
        return await self._json(  # type: ignore[no-any-return]
            "POST", http.path_of("v1", "plugins", name, "unload"))

    async def reload(self, name: str) -> PluginSummary:
        return await self._json(  # type: ignore[no-any-return]
            "POST", http.path_of("v1", "plugins", name, "reload"))

    async def call(self, name: str, method: str, input: Any = None, *,
                   timeout_ms: int | None = None) -> CallResult:
        """As ``Client.call``."""
        return core.call_result(*await self._request(*core.call_request(name, method, input,
                                                                        timeout_ms)))

    async def install(self, path: PathLike, *, load: bool = False,
                      replace: bool = False) -> InstallResult:
        return await self._json(  # type: ignore[no-any-return]
            *core.install_request(path, load, replace))

    async def upload(self, package: bytes | PathLike, *, load: bool = False,
                     replace: bool = False) -> InstallResult:
        return await self._json(  # type: ignore[no-any-return]
            *core.upload_request(package, load, replace))

    async def delete(self, name: str) -> dict[str, Any]:
        return await self._json(  # type: ignore[no-any-return]
            "DELETE", http.path_of("v1", "plugins", name))

    def events(self, plugin: str | None = None) -> AsyncEventStream:
        """The event stream as an async iterator, to use in an ``async
        with`` block (or ``await close()``). Bound a wait with
        ``asyncio.wait_for(stream.__anext__(), seconds)``."""
        return AsyncEventStream(self.socket, core.events_target(plugin))


class AsyncEventStream:
    def __init__(self, socket_path: str, target: str) -> None:
        self._socket = socket_path
        self._target = target
        self._response: http.AsyncResponse | None = None

    async def _open(self) -> http.AsyncResponse:
        if self._response is None:
            response = await http.open_async_response(self._socket, "GET", self._target)
            if response.status >= 400:
                body = await response.read(64 * 1024)
                await response.close()
                http.check(response.status, body)
            self._response = response
        return self._response

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        response = await self._open()
        while True:
            line = await response.readline()
            if not line:
                await self.close()
                raise StopAsyncIteration
            event = core.event_of(line)
            if event is not None:
                return event  # type: ignore[return-value]

    async def close(self) -> None:
        if self._response is not None:
            await self._response.close()

    async def __aenter__(self) -> AsyncEventStream:
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
