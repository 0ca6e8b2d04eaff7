"""What a handler sees of its call and of the plugin around it: the call's
id, method and deadline, whether the host cancelled it, the plugin's
settings and limits, and the way back to the host for logs and events."""

from __future__ import annotations

import time

from . import wire
from .errors import Cancelled

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .services import Host
    from .session import Session


class Context:
    """One call's context. Safe to use from the handler's thread or task;
    ``cancelled`` is set by the serve loop when the host sends Cancel."""

    __slots__ = ("_session", "call_id", "method", "deadline", "_cancelled", "_task", "_host",
                 "__weakref__")

    def __init__(self, session: Session, call_id: int, method: str,
                 deadline: float | None) -> None:
        self._session = session
        #: The host's id of this call.
        self.call_id = call_id
        #: The method being called.
        self.method = method
        #: ``time.monotonic()`` value when the host stops waiting, or None
        #: when the call has no timeout.
        self.deadline = deadline
        self._cancelled = False
        self._task: Any = None
        self._host: Host | None = None

    # -- cancellation

    @property
    def cancelled(self) -> bool:
        """True once the handler should stop: the host sent Cancel for this
        call, or its deadline passed. A reply sent after that is dropped by
        the host, so return whatever is at hand."""
        if self._cancelled:
            return True
        return self.deadline is not None and time.monotonic() >= self.deadline

    def check_cancelled(self) -> None:
        """Raises ``corral.Cancelled`` when ``cancelled`` is true."""
        if self.cancelled:
            raise Cancelled()

    @property
    def remaining(self) -> float | None:
        """Seconds left before the deadline (0 once passed); None without
        a timeout."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def _cancel(self) -> None:
        self._cancelled = True

    # -- the plugin around the call

    @property
    def config(self) -> Any:
        """The plugin's settings (Init's JSON, parsed; ``{}`` when none)."""
        return self._session.config

    @property
    def limits(self) -> wire.InitLimits:
        """The limits the sandbox enforces, as the host announced them."""
        return self._session.limits

    @property
    def plugin_name(self) -> str:
        return self._session.name

    # -- host services

    @property
    def host(self) -> Host:
        """Host services for this call: ``call_plugin``, ``publish``,
        ``subscribe``, ``kv``, ``s3``, ``settings`` (``corral.services``).
        Each request carries this call's id, so the host bounds it by
        what is left of the call's time."""
        if self._host is None:
            from .services import Host

            self._host = Host(self)
        return self._host

    # -- logs and events

    def log(self, level: str, message: str, **fields: object) -> None:
        """A log record in the host's log, tagged with this call's id.
        ``level`` is one of error, warn (warning), info, debug, trace."""
        self._session.log(level, message, fields, call_id=self.call_id)

    def debug(self, message: str, **fields: object) -> None:
        self.log("debug", message, **fields)

    def info(self, message: str, **fields: object) -> None:
        self.log("info", message, **fields)

    def warning(self, message: str, **fields: object) -> None:
        self.log("warn", message, **fields)

    warn = warning

    def error(self, message: str, **fields: object) -> None:
        self.log("error", message, **fields)

    def emit(self, topic: str, payload: object = None) -> None:
        """Publishes an event to the host's subscribers: ``payload`` as is
        when it is bytes, else as JSON."""
        if isinstance(payload, (bytes, bytearray, memoryview)):
            data = bytes(payload)
        else:
            import json

            data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode(
                "utf-8", "replace")
        self._session.emit(topic, data)

    def __repr__(self) -> str:
        return f"<corral.Context call {self.call_id} {self.method!r}>"
