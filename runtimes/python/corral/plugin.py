"""The decorator API: a ``Plugin`` holds a name, a version and handlers by
method name; ``serve()`` runs it on the host's channel.

    plugin = corral.Plugin("greeter", "1.0.0")

    @plugin.method()
    def greet(input):
        return {"greeting": f"Hello, {input['name']}!"}

    @plugin.method("slow.count")
    async def count(ctx, input):
        ...

A handler takes ``(input)`` or ``(ctx, input)`` (or nothing), decided by how
many positional parameters it declares; ``async def`` handlers run on one
event loop, plain ones on the pool's threads (each on the thread that read
its call, which hands the reading on), so calls may run concurrently.
"""

from __future__ import annotations

from . import wire

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

    from .context import Context

# CO_COROUTINE from the inspect module, without importing it (it is slow to
# import and the start of a plugin is measured).
_CO_COROUTINE = 0x0080


class Handler:
    """A registered function and how to call it."""

    __slots__ = ("method", "func", "arity", "is_async", "inline")

    def __init__(self, method: str, func: Callable[..., Any], inline: bool = False) -> None:
        self.method = method
        self.func = func
        self.arity, self.is_async = _shape(func)
        if inline and self.is_async:
            raise ValueError(f"method {method!r}: an async handler cannot run inline")
        #: Run on the serve loop's own thread (see Plugin.method).
        self.inline = inline

    def invoke(self, ctx: Context, value: Any) -> Any:
        if self.arity >= 2:
            return self.func(ctx, value)
        if self.arity == 1:
            return self.func(value)
        return self.func()


def _shape(func: Callable[..., Any]) -> tuple[int, bool]:
    """(positional parameters, is a coroutine function) of ``func``."""
    target = getattr(func, "__func__", func)  # a bound method
    bound = target is not func
    code = getattr(target, "__code__", None)
    if code is not None:
        positional = code.co_argcount - (1 if bound else 0)
        return positional, bool(code.co_flags & _CO_COROUTINE)
    # A partial, a callable object, a builtin: ask inspect (rare, so the
    # import cost is paid only here).
    import inspect

    call = type(func).__call__ if callable(func) else None
    is_async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(call)
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return 1, is_async
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params):
        return 2, is_async
    return sum(1 for p in params if p.kind in kinds), is_async


class Plugin:
    """A plugin: a name and version (announced in Hello; they should match
    the manifest's, and default to what the supervisor says the manifest
    has) and its methods."""

    def __init__(self, name: str | None = None, version: str | None = None, *,
                 max_frame: int = wire.DEFAULT_MAX_FRAME) -> None:
        # Without them, the names the supervisor gives the process (its
        # manifest's): one file can then serve several packages.
        import os

        self.name = name or os.environ.get("CORRAL_PLUGIN_NAME") or os.environ.get(
            "CORRAL_PLUGIN") or "plugin"
        self.version = version or os.environ.get("CORRAL_PLUGIN_VERSION") or "0.0.0"
        #: The largest frame this plugin accepts, announced in Hello (the
        #: host may choose less): kept between 1 KiB and 16 MiB.
        self.max_frame = max(wire.MIN_MAX_FRAME, min(int(max_frame), wire.HARD_MAX_FRAME))
        self.handlers: dict[str, Handler] = {}
        self.init_hooks: list[Callable[..., Any]] = []
        self.shutdown_hooks: list[Callable[..., Any]] = []
        #: The settings and limits from the host's Init, once it came.
        self.config: Any = None
        self.limits: wire.InitLimits | None = None
        _created.append(self)

    def method(self, name: str | None = None, *,
               inline: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Registers the decorated function as method ``name`` (by default
        the function's own name).

        ``inline=True`` runs a plain handler on the thread that reads the
        channel without handing the reading on first: a call costs a little
        less (no other thread is woken), but while it runs no other call
        starts and a Cancel is read only after it returns. For handlers
        that return quickly."""
        if callable(name):  # used bare: @plugin.method
            func = name
            self.add_method(func.__name__, func)
            return func

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            self.add_method(name or func.__name__, func, inline=inline)
            return func

        return register

    def add_method(self, name: str, func: Callable[..., Any], *, inline: bool = False) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("a method name is a non-empty string")
        if name in self.handlers:
            raise ValueError(f"method {name!r} is registered twice")
        self.handlers[name] = Handler(name, func, inline)

    def on_init(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Runs ``func(config)`` (or ``func()``) after the host's Init and
        before Ready; raising there fails the start."""
        self.init_hooks.append(func)
        return func

    def on_shutdown(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Runs ``func()`` after Shutdown, once the calls in flight ended."""
        self.shutdown_hooks.append(func)
        return func

    def method_list(self) -> str:
        names = sorted(self.handlers)
        return ", ".join(names) if names else "no methods"

    def serve(self) -> NoReturn:
        """Serves the host on fd 3 and exits the process (0 after Shutdown
        or end of stream, 76 when the host broke the protocol)."""
        from .session import serve

        serve(self)

    def __repr__(self) -> str:
        return f"<corral.Plugin {self.name} {self.version}: {self.method_list()}>"


#: Every Plugin made in this process, for the bootstrap to find.
_created: list[Plugin] = []

if TYPE_CHECKING:
    from typing import NoReturn
