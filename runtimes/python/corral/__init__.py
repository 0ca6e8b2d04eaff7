"""corral's Python plugin SDK: the child protocol of protocol/PROTOCOL.md
(versions 1 and 2, host services included) in pure Python, a decorator
API, and an adapter for plugins in seed 002's shape (``corral.pipeline``).

    import corral

    plugin = corral.Plugin("greeter", "1.0.0")

    @plugin.method()
    def greet(ctx, input):
        ctx.info("greeting", name=input["name"])
        return {"greeting": f"Hello, {input['name']}!"}

corral starts the plugin with ``corral_bootstrap.py <entry>``, which imports
the entry and serves the ``Plugin`` it made. ``plugin.serve()`` does the
same for a plugin started by hand with its channel on fd 3.
"""

from __future__ import annotations

from .context import Context
from .errors import (
    Cancelled,
    Crashed,
    DependencyError,
    InvalidInput,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    PermissionDenied,
    PluginError,
    PluginNotFound,
    QuotaExceeded,
    RateLimited,
    ServiceError,
    ServiceUnavailable,
    Timeout,
)
from .plugin import Plugin
from .services import Delivery, Host

#: Host services for whichever call the current thread or task serves
#: (``ctx.host`` is the same for one call): ``host.call_plugin(...)``,
#: ``host.kv.get(...)``, ``host.publish(...)``, ``host.subscribe(...)``.
host = Host()

__all__ = [
    "Plugin", "Context", "PluginError", "Cancelled", "host", "Host", "Delivery",
    "ServiceError", "PermissionDenied", "QuotaExceeded", "RateLimited", "PayloadTooLarge",
    "ServiceUnavailable", "Overloaded", "InvalidInput", "PluginNotFound", "Timeout", "Crashed",
    "DependencyError", "NotFound", "__version__",
]

__version__ = "0.1.0"
