"""What the API answers, as typed values. JSON objects the client passes
through unchanged are ``TypedDict``s (plain dicts at run time); a call's
answer is a ``CallResult``."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, TypedDict


@dataclass(frozen=True)
class Usage:
    """What one call cost."""

    #: Wall time from dispatch to reply, milliseconds.
    wall_ms: float
    #: CPU time the plugin used during the call, milliseconds.
    cpu_ms: float
    #: Highest memory charged to the plugin so far, bytes.
    peak_memory_bytes: int

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Usage:
        return cls(float(value.get("wall_ms", 0.0)), float(value.get("cpu_ms", 0.0)),
                   int(value.get("peak_memory_bytes", 0)))


@dataclass(frozen=True)
class CallResult:
    """A successful call: the plugin's output and what it cost."""

    #: The plugin's reply: its JSON value, or a string when the reply was
    #: not JSON (base64 when it was not UTF-8 either; see ``output_bytes``).
    output: Any
    usage: Usage
    #: ``"base64"`` when ``output`` holds the reply base64-encoded.
    output_encoding: str | None = None

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> CallResult:
        return cls(value.get("output"), Usage.from_json(value.get("usage") or {}),
                   value.get("output_encoding"))

    def output_bytes(self) -> bytes:
        """The reply's bytes as the plugin sent them when it was not JSON
        (base64-decoded, or the text's UTF-8)."""
        if self.output_encoding == "base64":
            return base64.b64decode(str(self.output))
        if isinstance(self.output, str):
            return self.output.encode("utf-8")
        import json

        return json.dumps(self.output, separators=(",", ":")).encode("utf-8")


class Health(TypedDict, total=False):
    status: str
    version: str
    uptime_ms: int
    plugins_installed: int
    plugins_loaded: int
    children_alive: int
    cgroup: str
    landlock_abi: int
    features_unavailable: list[str]
    #: a cgroup hierarchy is mounted with favordynmods (fast starts)
    cgroup_favordynmods: bool


class PluginSummary(TypedDict, total=False):
    name: str
    version: str
    description: str
    #: installed | starting | ready | restarting | quarantined | stopping
    state: str
    enabled: bool
    instances: int
    children: int
    in_flight: int
    calls_ok: int
    calls_failed: int
    restarts: int
    memory_bytes: int


class PluginDetail(PluginSummary, total=False):
    source: str
    digest: str
    manifest: dict[str, Any]
    policy: dict[str, Any] | None
    policy_error: dict[str, Any] | None
    processes: list[dict[str, Any]]
    last_error: dict[str, Any] | None
    #: Its instances run under the learning policy now (an operator's
    #: ``corral learn --daemon``).
    learning: bool


class PackageFile(TypedDict):
    """One file of an installed package (``GET /v1/plugins/{name}/files``)."""

    #: Relative to the package root, ``/``-separated.
    path: str
    size: int
    #: Last modification, milliseconds since the epoch.
    modified_ms: int


class InstallResult(TypedDict, total=False):
    plugin: str
    version: str
    digest: str
    #: True when this exact package was already installed.
    unchanged: bool
    state: str


class Event(TypedDict, total=False):
    """One line of ``GET /v1/events``: ``seq``, ``time_ms``, ``type``
    (loaded, ready, call_failed, crashed, restarted, quarantined, unloaded,
    policy_changed, lagged, plugin) and the fields of that type."""

    seq: int
    time_ms: int
    type: str
    plugin: str
