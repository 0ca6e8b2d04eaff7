"""Errors a handler raises on purpose, and the codes the runtime itself
puts in replies (the Rust SDK's codes, so a caller sees the same code
whichever language the plugin is written in)."""

from __future__ import annotations

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
