"""corral's error codes as exceptions.

Every failed API request answers ``{"error": {"code", "message", ...}}``;
``error_from_body`` turns it into the exception class named after the code
(``plugin_not_found`` -> ``PluginNotFound``), with the details as
attributes (``Timeout.limit_ms``, ``MemoryLimitExceeded.limit_bytes`` and
``peak_bytes``, ``Crashed.signal`` / ``exit_code``, ...). Every class
derives from ``CorralError``; the ones that mean the plugin's process died
also derive from ``PluginDied``. A code this version does not know is a
plain ``CorralError`` with its ``code``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class CorralError(Exception):
    """An error corrald answered with (or could not be reached: see
    ``DaemonUnavailable``)."""

    code: ClassVar[str] = ""
    #: The details this code carries, as attribute names.
    detail_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]
        #: The HTTP status it came with.
        self.status = status
        #: Everything next to ``code`` and ``message`` in the answer.
        self.details: dict[str, Any] = dict(details or {})
        for key in self.detail_keys:
            setattr(self, key, self.details.get(key))

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, details={self.details!r})"


class DaemonUnavailable(CorralError):
    """The socket is missing, refused the connection, or the daemon closed
    it without an answer."""

    code = "daemon_unavailable"


class PluginDied(CorralError):
    """The plugin's process ended during the call: killed at a limit, by
    seccomp, for breaking the protocol, or it crashed. The daemon restarts
    it, so the next call is served by a new process."""


# The table of README.md ("Error codes"), one class per code.


class InvalidInput(CorralError):
    """A malformed request (400; 404/405/413 for routes, methods, sizes)."""

    code = "invalid_input"
    detail_keys = ("reason",)
    reason: str | None


class InvalidManifest(CorralError):
    """The package's manifest is wrong: ``file``, ``key`` and ``reason``."""

    code = "invalid_manifest"
    detail_keys = ("file", "key", "reason")
    file: str | None
    key: str | None
    reason: str | None


class InvalidPolicy(CorralError):
    """A policy file is wrong (reload)."""

    code = "invalid_policy"
    detail_keys = ("file", "key", "reason")
    file: str | None
    key: str | None
    reason: str | None


class InvalidConfig(CorralError):
    """corrald.toml is wrong (reload)."""

    code = "invalid_config"
    detail_keys = ("file", "key", "reason")
    file: str | None
    key: str | None
    reason: str | None


class InvalidPackage(CorralError):
    """An archive or directory is not a package."""

    code = "invalid_package"
    detail_keys = ("reason",)
    reason: str | None


class DependencyMissing(CorralError):
    """A dependency is not installed, does not match, or is still needed."""

    code = "dependency_missing"
    detail_keys = ("dependency", "requirement")
    dependency: str | None
    requirement: str | None


class PermissionDenied(CorralError):
    """The caller may not, or the policy does not grant what the manifest
    asks (``permission``)."""

    code = "permission_denied"
    detail_keys = ("permission",)
    permission: str | None


class PluginNotFound(CorralError):
    """No such plugin."""

    code = "plugin_not_found"
    detail_keys = ("plugin",)
    plugin: str | None


class NotLoaded(CorralError):
    """The plugin is installed but not loaded."""

    code = "not_loaded"
    detail_keys = ("plugin",)
    plugin: str | None


class AlreadyExists(CorralError):
    """Another package has the name; install with ``replace=True``."""

    code = "already_exists"
    detail_keys = ("plugin", "installed_version", "installed_digest")
    plugin: str | None
    installed_version: str | None
    installed_digest: str | None


class VersionInUse(CorralError):
    """A version that cannot be removed: the current one, or one the
    loaded plugins in ``needed_by`` need."""

    code = "version_in_use"
    detail_keys = ("plugin", "version", "needed_by")
    plugin: str | None
    version: str | None
    needed_by: list[str] | None


class Quarantined(CorralError):
    """Crash loop: held down until ``load`` or ``reload``."""

    code = "quarantined"
    detail_keys = ("plugin", "failures", "window_ms")
    plugin: str | None
    failures: int | None
    window_ms: int | None


class PluginError(CorralError):
    """The plugin's handler answered with an error: its own code is
    ``plugin_code`` (``unknown_method``, ``invalid_input``, or what the
    plugin chose; ``plugin_error`` for an exception it did not handle)."""

    code = "plugin_error"
    detail_keys = ("plugin_code",)
    plugin_code: str | None


class Overloaded(CorralError):
    """Too many calls in flight for the plugin (``limit``)."""

    code = "overloaded"
    detail_keys = ("limit",)
    limit: int | None


class Cancelled(CorralError):
    """The call was cancelled (unload, reload, shutdown)."""

    code = "cancelled"


class Internal(CorralError):
    """A fault in corrald itself."""

    code = "internal"


class FeatureUnavailable(CorralError):
    """The kernel lacks a feature the policy marks ``required``."""

    code = "feature_unavailable"
    detail_keys = ("feature",)
    feature: str | None


class Crashed(PluginDied):
    """The plugin died by a ``signal`` (``signal_name``) or exited with
    ``exit_code``."""

    code = "crashed"
    detail_keys = ("signal", "signal_name", "exit_code")
    signal: int | None
    signal_name: str | None
    exit_code: int | None


class MemoryLimitExceeded(PluginDied):
    """OOM-killed at its cgroup limit: ``limit_bytes`` and ``peak_bytes``."""

    code = "memory_limit_exceeded"
    detail_keys = ("limit_bytes", "peak_bytes")
    limit_bytes: int | None
    peak_bytes: int | None

    @property
    def limit_mb(self) -> float | None:
        """The limit in MiB."""
        return None if self.limit_bytes is None else self.limit_bytes / (1 << 20)

    @property
    def used_mb(self) -> float | None:
        """The peak in MiB."""
        return None if self.peak_bytes is None else self.peak_bytes / (1 << 20)


class PidsLimitExceeded(PluginDied):
    """Died having hit its task limit (``limit``)."""

    code = "pids_limit_exceeded"
    detail_keys = ("limit",)
    limit: int | None


class SeccompViolation(PluginDied):
    """Killed for a system call outside its allow-list (``syscall``)."""

    code = "seccomp_violation"
    detail_keys = ("syscall",)
    syscall: str | None


class ProtocolViolation(PluginDied):
    """The plugin broke the wire protocol (``reason``)."""

    code = "protocol_violation"
    detail_keys = ("reason",)
    reason: str | None


class Timeout(CorralError):
    """The call ran past its limit (``limit_ms``) and was cancelled (a
    plugin that does not stop within the grace period is killed)."""

    code = "timeout"
    detail_keys = ("limit_ms",)
    limit_ms: int | None


class SandboxSetupFailed(CorralError):
    """A confinement step failed before the plugin ran (``step``, ``errno``)."""

    code = "sandbox_setup_failed"
    detail_keys = ("step", "errno")
    step: str | None
    errno: int | None


class ShuttingDown(CorralError):
    """corrald is draining."""

    code = "shutting_down"


class StartTimeout(CorralError):
    """The plugin did not become ready within its start timeout (``limit_ms``)."""

    code = "start_timeout"
    detail_keys = ("limit_ms",)
    limit_ms: int | None


#: Every class by its code.
BY_CODE: dict[str, type[CorralError]] = {
    cls.code: cls
    for cls in (InvalidInput, InvalidManifest, InvalidPolicy, InvalidConfig, InvalidPackage,
                DependencyMissing, PermissionDenied, PluginNotFound, NotLoaded, AlreadyExists,
                VersionInUse, Quarantined, PluginError, Overloaded, Cancelled, Internal,
                FeatureUnavailable, Crashed, MemoryLimitExceeded, PidsLimitExceeded,
                SeccompViolation, ProtocolViolation, SandboxSetupFailed, ShuttingDown, Timeout,
                StartTimeout)
}


def error_from_body(status: int, body: bytes) -> CorralError:
    """The exception for a failed answer: typed by its code when the body
    is corral's error shape, else a ``CorralError`` quoting the body."""
    import json

    try:
        error = json.loads(body.decode("utf-8"))["error"]
        code = str(error["code"])
        message = str(error.get("message") or code)
    except (ValueError, KeyError, TypeError, AttributeError):
        text = body[:500].decode("utf-8", "replace")
        return CorralError(f"HTTP {status}: {text}", code="http_error", status=status)
    details = {k: v for k, v in error.items() if k not in ("code", "message")}
    cls = BY_CODE.get(code)
    if cls is None:
        return CorralError(message, code=code, status=status, details=details)
    return cls(message, status=status, details=details)
