"""What the sync and asyncio clients share: how each operation becomes a
request and how its answer becomes a value. Only the I/O differs."""

from __future__ import annotations

import io
import json
import os
import tarfile
from typing import Any, Optional, Union

from . import transport as http
from .types import CallResult

PathLike = Union[str, "os.PathLike[str]"]

#: (method, target, body, content type)
Request = tuple[str, str, Optional[bytes], Optional[str]]


def call_request(name: str, method: str, input: Any = None,
                 timeout_ms: int | None = None) -> Request:
    body: dict[str, Any] = {"method": method, "input": input}
    if timeout_ms is not None:
        body["timeout_ms"] = int(timeout_ms)
    return ("POST", http.path_of("v1", "plugins", name, "call"), http.json_body(body),
            "application/json")


def file_target(name: str, path: str) -> str:
    """``GET /v1/plugins/{name}/files/{path}``, each part of ``path``
    encoded on its own so ``/`` keeps separating them."""
    return http.path_of("v1", "plugins", name, "files", *path.split("/"))


def call_result(status: int, body: bytes) -> CallResult:
    return CallResult.from_json(http.parse_json(status, body))


def install_request(path: PathLike, load: bool, replace: bool) -> Request:
    # The daemon reads the path itself, from its own working directory:
    # a relative path is made absolute here, where the caller meant it.
    absolute = os.path.abspath(os.fspath(path))
    return ("POST", "/v1/plugins",
            http.json_body({"path": absolute, "load": load, "replace": replace}),
            "application/json")


def upload_request(package: bytes | PathLike, load: bool, replace: bool) -> Request:
    """An upload of a ``.tar.gz`` (bytes or a file), or of a package
    directory packed here."""
    if isinstance(package, (bytes, bytearray)):
        data = bytes(package)
    elif os.path.isdir(package):
        data = pack_directory(package)
    else:
        with open(package, "rb") as f:
            data = f.read()
    target = http.path_of("v1", "plugins", query={"load": load, "replace": replace})
    return ("POST", target, data, "application/gzip")


def pack_directory(directory: PathLike) -> bytes:
    """A package directory as the ``.tar.gz`` corrald installs: its files
    under one top folder named after it. Links are stored as links (the
    daemon refuses those that lead out of the package)."""
    directory = os.path.abspath(os.fspath(directory))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        tar.add(directory, arcname=os.path.basename(directory) or "package",
                filter=_deterministic)
    return out.getvalue()


def _deterministic(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def events_target(plugin: str | None) -> str:
    return http.path_of("v1", "events", query={"plugin": plugin})


def event_of(line: bytes) -> dict[str, Any] | None:
    line = line.strip()
    if not line:
        return None
    value = json.loads(line.decode("utf-8"))
    if not isinstance(value, dict):
        raise ValueError(f"an event that is not an object: {line[:80]!r}")
    return value
