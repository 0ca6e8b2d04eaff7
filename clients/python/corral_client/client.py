"""The blocking client."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
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


class Client:
    """corrald's API on its Unix socket.

    ``socket``: the socket's path (default: ``$CORRAL_SOCKET``, else
    ``/run/corral/corral.sock``). ``timeout``: seconds any one request may
    take before ``TimeoutError`` (None: no limit; a call is bounded by the
    plugin's own timeout anyway). Each request opens its own connection, so
    one client may be used from several threads.
    """

    def __init__(self, socket: PathLike | None = None, *,
                 timeout: float | None = None) -> None:
        self.socket = http.socket_path(socket)
        self.timeout = timeout

    def _request(self, method: str, target: str, body: bytes | None = None,
                 content_type: str | None = None) -> tuple[int, bytes]:
        return http.request(self.socket, self.timeout, method, target, body, content_type)

    def _json(self, method: str, target: str, body: bytes | None = None,
              content_type: str | None = None) -> Any:
        return http.parse_json(*self._request(method, target, body, content_type))

    # -- the daemon

    def health(self) -> Health:
        """``GET /v1/health``."""
        return self._json("GET", "/v1/health")  # type: ignore[no-any-return]

    def metrics(self) -> str:
        """``GET /metrics``: OpenMetrics text."""
        status, body = self._request("GET", "/metrics")
        http.check(status, body)
        return body.decode("utf-8")

    def reload_configuration(self) -> dict[str, Any]:
        """``POST /v1/reload``: re-read corrald.toml and the policy (admin)."""
        return self._json("POST", "/v1/reload")  # type: ignore[no-any-return]

    # -- plugins

    def list(self) -> builtins.list[PluginSummary]:
        """``GET /v1/plugins``."""
        return self._json("GET", "/v1/plugins")  # type: ignore[no-any-return]

    def info(self, name: str) -> PluginDetail:
        """``GET /v1/plugins/{name}``: manifest, policy, state, processes."""
        return self._json("GET", http.path_of("v1", "plugins", name))  # type: ignore[no-any-return]

    def exists(self, name: str) -> bool:
        """Whether a plugin of that name is installed."""
        from .errors import PluginNotFound

        try:
            self.info(name)
        except PluginNotFound:
            return False
        return True

    def policy(self, name: str) -> dict[str, Any]:
        """``GET /v1/plugins/{name}/policy``: the compiled sandbox (admin)."""
        return self._json(  # type: ignore[no-any-return]
            "GET", http.path_of("v1", "plugins", name, "policy"))

    def files(self, name: str) -> builtins.list[PackageFile]:
        """``GET /v1/plugins/{name}/files``: the installed package's
        regular files, sorted by path."""
        answer = self._json("GET", http.path_of("v1", "plugins", name, "files"))
        return answer["files"]  # type: ignore[no-any-return]

    def file(self, name: str, path: str) -> bytes:
        """``GET /v1/plugins/{name}/files/{path}``: one file's bytes (at
        most 16 MiB); a path outside the package is ``InvalidInput``."""
        status, body = self._request("GET", core.file_target(name, path))
        http.check(status, body)
        return body

    def load(self, name: str) -> PluginSummary:
        return self._json(  # type: ignore[no-any-return]
            "POST", http.path_of("v1", "plugins", name, "load"))

    def unload(self, name: str) -> PluginSummary:
        return self._json(  # type: ignore[no-any-return]
            "POST", http.path_of("v1", "plugins", name, "unload"))

    def reload(self, name: str) -> PluginSummary:
        return self._json(  # type: ignore[no-any-return]
            "POST", http.path_of("v1", "plugins", name, "reload"))

    def call(self, name: str, method: str, input: Any = None, *,
             timeout_ms: int | None = None) -> CallResult:
        """Calls ``method`` of plugin ``name`` with ``input`` (any JSON
        value). ``timeout_ms`` shortens the policy's per-call limit. A
        failure raises the error class of its code (``PluginError``,
        ``Timeout``, ``MemoryLimitExceeded``, ...)."""
        return core.call_result(*self._request(*core.call_request(name, method, input,
                                                                  timeout_ms)))

    def install(self, path: PathLike, *, load: bool = False,
                replace: bool = False) -> InstallResult:
        """Installs a package directory or ``.tar.gz`` that the daemon can
        read at ``path``. ``replace`` swaps another package installed under
        the same name (refused with ``AlreadyExists`` otherwise)."""
        return self._json(*core.install_request(path, load, replace))  # type: ignore[no-any-return]

    def upload(self, package: bytes | PathLike, *, load: bool = False,
               replace: bool = False) -> InstallResult:
        """Installs a package sent in the request: ``.tar.gz`` bytes or file,
        or a package directory (packed here)."""
        return self._json(*core.upload_request(package, load, replace))  # type: ignore[no-any-return]

    def delete(self, name: str) -> dict[str, Any]:
        """``DELETE /v1/plugins/{name}``: stops and removes it."""
        return self._json(  # type: ignore[no-any-return]
            "DELETE", http.path_of("v1", "plugins", name))

    def events(self, plugin: str | None = None, *,
               timeout: float | None = None) -> EventStream:
        """The event stream (``GET /v1/events``), optionally of one plugin:
        an iterator of events, to use in a ``with`` block (or ``close()``).
        ``timeout``: seconds to wait for the next event before
        ``TimeoutError`` (None: forever)."""
        return EventStream(self.socket, core.events_target(plugin), timeout)


class EventStream:
    """Events as they happen, one dict per event (see ``types.Event``)."""

    def __init__(self, socket_path: str, target: str, timeout: float | None) -> None:
        self._conn = http.UnixHTTPConnection(socket_path, timeout)
        try:
            self._response = http.open_response(self._conn, "GET", target)
            if self._response.status >= 400:
                http.check(self._response.status, self._response.read(64 * 1024))
        except BaseException:
            self._conn.close()
            raise

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        while True:
            line = self._response.readline(16 * 1024 * 1024)
            if not line:
                self.close()
                raise StopIteration
            event = core.event_of(line)
            if event is not None:
                return event  # type: ignore[return-value]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Client", "EventStream"]
