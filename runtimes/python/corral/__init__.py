"""corral's Python plugin SDK: the child protocol of protocol/PROTOCOL.md
(version 1) in pure Python, a decorator API, and an adapter for plugins in
seed 002's shape (``corral.pipeline``).

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
from .errors import Cancelled, PluginError
from .plugin import Plugin

__all__ = ["Plugin", "Context", "PluginError", "Cancelled", "__version__"]

__version__ = "0.1.0"
