"""Errors a handler raises on purpose, and the codes the runtime itself
puts in replies (the Rust SDK's codes, so a caller sees the same code
whichever language the plugin is written in)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: An exception the handler did not choose (message "<ExcType>: <message>").
PLUGIN_ERROR = "plugin_error"
#: The input is not JSON (or not what the method takes).
INVALID_INPUT = "invalid_input"
#: No handler is registered under the called method.
UNKNOWN_METHOD = "unknown_method"
#: The call was cancelled before or while its handler ran.
CANCELLED = "cancelled"
#: The reply would exceed the negotiated maximum frame.
REPLY_TOO_LARGE = "reply_too_large"
#: The call arrived after the host asked the plugin to shut down.
SHUTTING_DOWN = "shutting_down"
#: The handler's return value does not encode as JSON.
INVALID_OUTPUT = "invalid_output"
#: The plugin's settings are not what it needs.
INVALID_CONFIG = "invalid_config"


class PluginError(Exception):
    """Raise this from a handler to answer with your own error code.

    ``code`` is short and machine-readable (``bad_csv``); ``message`` is
    for people. The caller gets both (through the API as ``plugin_error``
    with ``plugin_code``). Any other exception is answered with code
    ``plugin_error`` and the message ``"<ExcType>: <message>"``.
    """

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class Cancelled(PluginError):
    """Raised by ``Context.check_cancelled()`` once the host gave up on
    the call."""

    def __init__(self, message: str = "the host cancelled the call") -> None:
        super().__init__(CANCELLED, message)


# ---------------------------------------------------------------- host services


class ServiceError(PluginError):
    """A host service refused or failed a request (PROTOCOL.md section 9).

    ``code`` and ``message`` are the API's; ``details`` is the API's whole
    error object (``{"code", "message", "permission": ...}``), and the
    keys a code carries are attributes too (``PermissionDenied.permission``,
    ``QuotaExceeded.quota_bytes``). Classes are named after the code, as in
    the Python client library (``corral_client``), and derive from
    ``PluginError``: left uncaught in a handler, the call is answered with
    the service's code and message.
    """

    #: The code a subclass stands for ("" for the base class).
    code_name = ""
    #: The details this code carries, as attribute names.
    detail_keys: tuple[str, ...] = ()

    def __init__(self, message: str = "", *, code: str | None = None,
                 details: dict[str, object] | None = None) -> None:
        super().__init__(code or self.code_name or "service_error", message)
        self.details: dict[str, object] = dict(details or {})
        for key in self.detail_keys:
            setattr(self, key, self.details.get(key))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, details={self.details!r})"


class PermissionDenied(ServiceError):
    """The policy does not grant it: ``permission`` names what
    (``kv.table secrets``, ``plugins.call text-utils``, ``events.publish
    orders.created``)."""

    code_name = "permission_denied"
    detail_keys = ("permission",)
    permission: Any


class QuotaExceeded(ServiceError):
    """A ``kv.put`` would take the plugin's tables past its storage quota; nothing changed."""

    code_name = "quota_exceeded"
    detail_keys = ("quota_bytes", "used_bytes")
    quota_bytes: Any
    used_bytes: Any


class RateLimited(ServiceError):
    """More requests a second than the policy allows."""

    code_name = "rate_limited"


class PayloadTooLarge(ServiceError):
    """The request is larger than the policy's ``request_max_bytes`` or the frame limit."""

    code_name = "payload_too_large"


class ServiceUnavailable(ServiceError):
    """The host does not offer this service here (``corral run``, no S3
    configured, or a host speaking protocol version 1)."""

    code_name = "service_unavailable"
    detail_keys = ("service",)
    service: Any


class Overloaded(ServiceError):
    """Too many requests waiting for their responses."""

    code_name = "overloaded"


class InvalidInput(ServiceError):
    """An unknown service or operation, or a payload that is not what it takes."""

    code_name = "invalid_input"
    detail_keys = ("reason",)
    reason: Any


class InvalidConfig(ServiceError):
    """The plugin's settings are not valid."""

    code_name = "invalid_config"
    detail_keys = ("pointer", "rule")
    pointer: Any
    rule: Any


class PluginNotFound(ServiceError):
    """The dependency is not installed."""

    code_name = "plugin_not_found"
    detail_keys = ("plugin",)
    plugin: Any


class NotLoaded(ServiceError):
    """The dependency is installed but not loaded."""

    code_name = "not_loaded"
    detail_keys = ("plugin",)
    plugin: Any


class Timeout(ServiceError):
    """The request (a dependency's call) ran out of time."""

    code_name = "timeout"
    detail_keys = ("limit_ms",)
    limit_ms: Any


class Crashed(ServiceError):
    """The dependency's process died during the call."""

    code_name = "crashed"
    detail_keys = ("signal", "exit_code")
    signal: Any
    exit_code: Any


class DependencyError(ServiceError):
    """The dependency answered with an error of its own: ``plugin_code`` is its code
    (the client library calls this ``PluginError``)."""

    code_name = "plugin_error"
    detail_keys = ("plugin_code",)
    plugin_code: Any


class NotFound(ServiceError):
    """No such object (``s3.get`` of a missing key)."""

    code_name = "not_found"
    detail_keys = ("key",)
    key: Any


#: Every service error class by its code.
SERVICE_ERRORS: dict[str, type[ServiceError]] = {
    cls.code_name: cls for cls in (
        PermissionDenied, QuotaExceeded, RateLimited, PayloadTooLarge, ServiceUnavailable,
        Overloaded, InvalidInput, InvalidConfig, PluginNotFound, NotLoaded, Timeout, Crashed,
        DependencyError, NotFound)
}


def service_error(code: str, message: str,
                  details: dict[str, object] | None = None) -> ServiceError:
    """The exception for an ``Err`` response: the class of its code, or a
    plain ``ServiceError`` carrying a code this version does not know."""
    cls = SERVICE_ERRORS.get(code)
    if cls is None:
        return ServiceError(message, code=code, details=details)
    return cls(message, details=details)
