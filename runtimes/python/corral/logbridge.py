"""``logging`` records become Log frames in the host's log.

The handler goes on the root logger once the plugin has imported
``logging`` (checked after the entry is imported, after Init and at every
call), so a plugin that never logs does not pay for importing it at start.
A record made while a call's handler runs carries the call's id; every
record carries its logger's name.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .session import Session

_installed = False


def install_if_logging(session: Session) -> None:
    """Installs the bridge when ``logging`` has been imported."""
    global _installed
    if _installed or "logging" not in sys.modules:
        return
    _installed = True
    import logging

    from .session import current_call

    class CorralLogHandler(logging.Handler):
        """Sends each record to the host as a Log frame."""

        def emit(self, record: logging.LogRecord) -> None:
            try:
                message = record.getMessage()
                if record.exc_info:
                    message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
                if record.levelno >= logging.ERROR:
                    level = "error"
                elif record.levelno >= logging.WARNING:
                    level = "warn"
                elif record.levelno >= logging.INFO:
                    level = "info"
                elif record.levelno >= logging.DEBUG:
                    level = "debug"
                else:
                    level = "trace"
                ctx = current_call.get()
                session.log(level, message, None,
                            call_id=ctx.call_id if ctx is not None else None,
                            logger=record.name)
            except Exception:  # noqa: BLE001 - logging must never fail a call
                self.handleError(record)

    root = logging.getLogger()
    root.addHandler(CorralLogHandler())
    # Python's default root level (WARNING) would drop the `info` records
    # plugin authors expect to see; a plugin that configured logging keeps
    # its own level.
    if root.level == logging.WARNING and len(root.handlers) == 1:
        root.setLevel(logging.INFO)
