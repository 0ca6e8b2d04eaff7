"""The serve loop: the handshake, then reading the host's messages and
running each call's handler, so that Ping and Cancel are answered while
handlers run and calls run concurrently.

Threads (``Crew``, leader/follower): one thread at a time reads the
channel, the main thread first. On a Call for a plain handler the reader
hands the reading to an idle thread of the pool (or starts one, within
the limit the pids limit leaves) and runs the handler itself, then sends
its reply: no thread wake-up lies between reading a call and running it.
Done, the thread runs a call from the backlog (calls that found every
thread busy), else reads again if nobody reads, else parks until another
thread hands it the reading. ``async def`` handlers run on the event loop
thread; ``inline=True`` handlers, and every handler when no other thread
can be had, run on the reader and keep the reading meanwhile.

Order of a plugin's life (PROTOCOL.md section 5):

1. Hello, at once; Init read under the 1 MiB handshake limit and checked
   (version offered, ``1024 <= max_frame <= Hello.max_frame``), or exit 76.
2. Set-up: the plugin's init hooks (the seed-002 adapter's ``initialize``)
   with the settings; a failure there is printed and ends the start
   (exit 70) before Ready.
3. Ready, then the loop: a Call runs on the thread that read it (plain
   handlers; the reading moves on) or on the event loop thread (``async
   def`` handlers); Cancel marks the call's context (and cancels its
   task); Ping is answered at once;
   Shutdown waits for the calls in flight (up to its grace), runs the
   shutdown hooks and exits 0; end of stream exits 0 at once; anything
   that does not decode, or a second Init, exits 76 without another byte.
4. Host services (version 2, ``services.py``): a Response wakes the
   request waiting for it, a Deliver runs the subscription's handlers like
   a call's; a handler waiting on the reading thread itself reads on
   (``pump_until``), and what it may not run there is queued for the loop;
   one on any other thread waits for the reader to wake it.
"""

from __future__ import annotations

import contextvars
import sys
import time
from _thread import allocate_lock, get_ident

from . import errors, logbridge, wire
from .channel import EX_CONFIG, EX_PROTOCOL, Channel, HostGone, die
from .context import Context
from .errors import PluginError
from .services import Services

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, NoReturn

    from .plugin import Handler, Plugin

    #: A function to run on a pool thread, and its arguments.
    Job = tuple[Callable[..., None], tuple[Any, ...]]

#: sysexits.h EX_SOFTWARE: the plugin's own set-up failed before Ready.
EX_SOFTWARE = 70

#: Error messages are cut to this many bytes so an error reply always fits.
MAX_ERROR_MESSAGE = 16 * 1024
#: Log messages and field values are cut to these sizes.
MAX_LOG_MESSAGE = 32 * 1024
MAX_LOG_FIELD = 4 * 1024

#: The call whose handler runs in this thread or task (for log records).
current_call: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "corral_current_call", default=None)

#: The session serving this process (``corral.host`` finds it here).
_active: Session | None = None


def active_session() -> Session | None:
    return _active


_LEVELS = {"error": wire.LOG_ERROR, "warn": wire.LOG_WARN, "warning": wire.LOG_WARN,
           "info": wire.LOG_INFO, "debug": wire.LOG_DEBUG, "trace": wire.LOG_TRACE}


def cut(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` UTF-8 bytes, cut between characters
    (lone surrogates, which are not UTF-8, become "?")."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return data.decode("utf-8")
    return data[:limit].decode("utf-8", "ignore")


class Session:
    def __init__(self, plugin: Plugin, channel: Channel) -> None:
        self.plugin = plugin
        self.channel = channel
        self.name = plugin.name
        self.config: Any = {}
        self.config_bytes = b"{}"
        self.limits = wire.InitLimits()
        self.max_frame = wire.HANDSHAKE_MAX_FRAME
        self._in_flight: dict[int, Context] = {}
        self._lock = allocate_lock()
        #: Notified when the last call in flight ends (made at Shutdown).
        self._drained: Any = None
        self._pool: Crew | None = None
        self._async: AsyncRunner | bool | None = None
        self.services = Services(self)
        #: The thread that reads the channel (a request made on it must
        #: read its own response).
        self.reader_thread = get_ident()
        #: Messages read while a handler waited on the reading thread and
        #: that must not run there: Calls, Deliveries, Shutdown.
        self._deferred: list[wire.Message] = []
        global _active
        _active = self

    # ------------------------------------------------------------ handshake

    def handshake(self) -> None:
        plugin = self.plugin
        self.channel.send(wire.Hello(plugin.name, plugin.version, plugin.max_frame))
        try:
            first = self.channel.receive()
        except HostGone:
            die(EX_PROTOCOL, "the host closed the channel before Init")
        if not isinstance(first, wire.Init):
            self.channel.violation(
                f"expected Init as the host's first message, got {type(first).__name__}")
        init = first
        if init.version not in wire.VERSIONS:
            self.channel.violation(
                f"the host chose protocol version {init.version}; this plugin speaks "
                f"{list(wire.VERSIONS)}")
        if not wire.MIN_MAX_FRAME <= init.max_frame <= plugin.max_frame:
            self.channel.violation(
                f"the host's maximum frame of {init.max_frame} bytes is outside "
                f"{wire.MIN_MAX_FRAME}..={plugin.max_frame} (this plugin's Hello)")
        self.services.version = init.version
        self.max_frame = min(init.max_frame, wire.HARD_MAX_FRAME)
        self.channel.set_read_limit(self.max_frame)
        # Until Ready both limits apply to what the plugin sends.
        self.channel.send_limit = min(self.max_frame, wire.HANDSHAKE_MAX_FRAME)
        self.limits = init.limits
        self.config_bytes = init.config or b"{}"
        if self.config_bytes.strip() != b"{}":  # `{}` needs no JSON parser yet
            import json

            try:
                self.config = json.loads(self.config_bytes.decode("utf-8"))
            except ValueError as e:
                die(EX_CONFIG, f"the plugin's settings from the host are not JSON: {e}")
        plugin.config, plugin.limits = self.config, self.limits
        logbridge.install_if_logging(self)
        for hook in plugin.init_hooks:
            try:
                _call_with_optional(hook, self.config)
            except BaseException as e:  # noqa: BLE001 - reported, then the start fails
                _print_exception(e, f"the plugin's set-up ({_name_of(hook)}) failed")
                die(EX_SOFTWARE)
        self.channel.send(wire.Ready())
        self.channel.send_limit = self.max_frame
        self.services.send_early_subscriptions()
        # Every call needs the JSON codec and the pool's threads (and an
        # async handler the event loop); importing them costs more than the
        # rest of the start, so it happens once the host has Ready (and is
        # busy with it) rather than before.
        import json  # noqa: F401

        workers = 8 if init.limits.pids == 0 else min(8, init.limits.pids - 2)
        self._pool = Crew(self, max(0, workers))
        if any(h.is_async for h in plugin.handlers.values()):
            self.async_runner()  # asyncio too, when some handler needs it

    # ------------------------------------------------------------ the loop

    def run(self) -> NoReturn:
        """Serves until Shutdown or end of stream: the calling thread reads
        first, then the pool's threads take turns (``Crew``)."""
        assert self._pool is not None
        self._pool.lead()

    def read_one(self) -> None:
        """Reads and dispatches one message (or one a handler's wait on the
        reading thread put aside): done by the reader only."""
        if self._deferred:
            message = self._deferred.pop(0)
        else:
            try:
                message = self.channel.receive()
            except HostGone:
                die(0)
        self.dispatch(message)

    def dispatch(self, message: wire.Message, *, pumping: bool = False) -> None:
        """Acts on one message from the host. ``pumping``: a handler on the
        reading thread waits for a response, so what would run a handler
        (or end the process) is queued for the loop instead."""
        channel = self.channel
        if isinstance(message, wire.Response):
            self.services.on_response(message)
        elif pumping and isinstance(message, (wire.Call, wire.Deliver, wire.Shutdown)):
            self._deferred.append(message)
        elif isinstance(message, wire.Call):
            self._call(message)
        elif isinstance(message, wire.Cancel):
            self._cancel(message.id)
        elif isinstance(message, wire.HostPing):
            channel.send(wire.Pong(message.nonce))
        elif isinstance(message, wire.Deliver):
            self.services.on_deliver(message)
        elif isinstance(message, wire.Shutdown):
            self._shutdown(message.grace_ms)
        elif isinstance(message, wire.HostPong):
            pass  # this runtime never pings the host
        else:
            channel.violation(f"the host sent {type(message).__name__} after the handshake")

    def pump_until(self, done: Callable[[], bool]) -> None:
        """Reads and dispatches frames on the reading thread until
        ``done()``: a request made there waits for its own response."""
        while not done():
            try:
                message = self.channel.receive()
            except HostGone:
                die(0)
            self.dispatch(message, pumping=True)

    def _call(self, call: wire.Call) -> None:
        logbridge.install_if_logging(self)
        handler = self.plugin.handlers.get(call.method)
        if handler is None:
            self._send_reply(call.id, None, (
                errors.UNKNOWN_METHOD,
                f"this plugin has no method `{cut(call.method, 256)}`; it serves: "
                f"{self.plugin.method_list()}"))
            return
        deadline = time.monotonic() + call.timeout_ms / 1000 if call.timeout_ms else None
        ctx = Context(self, call.id, call.method, deadline)
        with self._lock:
            self._in_flight[call.id] = ctx
        runner = self.async_runner() if handler.is_async else None
        if runner is not None:
            runner.submit(handler, ctx, call.input)
        elif handler.is_async:  # no thread for an event loop: one loop per call
            assert self._pool is not None
            self._pool.submit(self.run_async_here, handler, ctx, call.input)
        elif handler.inline:
            self.run_sync(handler, ctx, call.input)
        else:
            assert self._pool is not None
            self._pool.submit(self.run_sync, handler, ctx, call.input)

    def _cancel(self, call_id: int) -> None:
        with self._lock:
            ctx = self._in_flight.get(call_id)
        if ctx is None:
            return  # answered already: the Cancel crossed the reply
        ctx._cancel()
        self.services.cancel_call(call_id)
        if ctx._task is not None and isinstance(self._async, AsyncRunner):
            self._async.cancel(ctx)

    def _shutdown(self, grace_ms: int) -> NoReturn:
        import threading

        deadline = time.monotonic() + grace_ms / 1000
        with self._lock:
            self._drained = threading.Condition(self._lock)
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._drained.wait(left)
        for hook in self.plugin.shutdown_hooks:
            try:
                hook()
            except BaseException as e:  # noqa: BLE001 - the stop goes on
                _print_exception(e, f"shutdown hook {_name_of(hook)} failed")
        die(0)

    # ------------------------------------------------------------ handlers

    def run_sync(self, handler: Handler, ctx: Context, raw: bytes) -> None:
        """Runs a plain handler on this thread and sends its reply."""
        if ctx._cancelled:
            self.finish(ctx, error=(errors.CANCELLED, "cancelled before the handler started"))
            return
        token = current_call.set(ctx)
        try:
            result = handler.invoke(ctx, decode_input(ctx.method, raw))
            if hasattr(result, "__await__"):  # a plain function returned a coroutine
                runner = self.async_runner()
                if runner is not None:
                    result = runner.wait(result)
                else:
                    import asyncio

                    result = asyncio.run(_await(result))
            self.finish(ctx, output=result)
        except SystemExit as e:
            die(_exit_code(e))
        except BaseException as e:  # noqa: BLE001 - every failure is a reply
            self.finish(ctx, error=error_of(e))
        finally:
            current_call.reset(token)

    async def run_async(self, handler: Handler, ctx: Context, raw: bytes) -> None:
        """Runs an ``async def`` handler as a task and sends its reply."""
        import asyncio

        current_call.set(ctx)  # the task runs in a copy of the context
        try:
            result = handler.invoke(ctx, decode_input(ctx.method, raw))
            if hasattr(result, "__await__"):
                result = await result
            self.finish(ctx, output=result)
        except asyncio.CancelledError:
            self.finish(ctx, error=(errors.CANCELLED, "the host cancelled the call"))
        except SystemExit as e:
            die(_exit_code(e))
        except BaseException as e:  # noqa: BLE001
            self.finish(ctx, error=error_of(e))

    def run_async_here(self, handler: Handler, ctx: Context, raw: bytes) -> None:
        """Runs an ``async def`` handler on this thread's own event loop."""
        import asyncio

        asyncio.run(self.run_async(handler, ctx, raw))

    def finish(self, ctx: Context, output: Any = None,
               error: tuple[str, str] | None = None) -> None:
        """Sends the reply to ``ctx``'s call, once."""
        with self._lock:
            if self._in_flight.pop(ctx.call_id, None) is None:
                return
        data: bytes | None = None
        if error is None:
            try:
                data = encode_output(ctx.method, output)
            except PluginError as e:
                error = (e.code, e.message)
        self._send_reply(ctx.call_id, data, error)
        with self._lock:
            if not self._in_flight and self._drained is not None:
                self._drained.notify_all()

    def _send_reply(self, call_id: int, data: bytes | None,
                    error: tuple[str, str] | None) -> None:
        if data is not None and len(data) > self.max_frame - wire.REPLY_OVERHEAD:
            error = (errors.REPLY_TOO_LARGE,
                     f"the output is {len(data)} bytes but the maximum frame is "
                     f"{self.max_frame} bytes")
            data = None
        if error is not None:
            code, message = error
            reply = wire.Reply(call_id, error=(cut(code, 256), cut(message, MAX_ERROR_MESSAGE)))
        else:
            reply = wire.Reply(call_id, output=data)
        if not self.channel.send(reply):
            self.channel.send(wire.Reply(call_id, error=(
                errors.REPLY_TOO_LARGE, "the error reply does not fit in a frame")))

    def async_runner(self) -> AsyncRunner | None:
        """The event loop thread; None when no thread can be started (at the
        pids limit)."""
        with self._lock:
            if self._async is None:
                try:
                    self._async = AsyncRunner(self)
                except RuntimeError:  # "can't start new thread"
                    self._async = False
            return self._async if isinstance(self._async, AsyncRunner) else None

    def run_event_handler(self, handler: Callable[..., Any], delivery: Any) -> None:
        """Runs a subscription's handler for one delivery where a call's
        handler would run: a pool thread, or the event loop."""
        from .plugin import _shape

        arity, is_async = _shape(handler)
        args = (delivery.payload, delivery)[:min(arity, 2)]
        if is_async:
            runner = self.async_runner()
            if runner is not None:
                runner.loop.call_soon_threadsafe(
                    runner.loop.create_task, self._event_task(handler, args, delivery))
                return
        assert self._pool is not None
        self._pool.submit(self._run_event_handler, handler, args, delivery)

    def _run_event_handler(self, handler: Callable[..., Any], args: tuple[Any, ...],
                           delivery: Any) -> None:
        try:
            result = handler(*args)
            if hasattr(result, "__await__"):
                import asyncio

                asyncio.run(_await(result))
        except SystemExit as e:
            die(_exit_code(e))
        except BaseException as e:  # noqa: BLE001 - reported; the plugin goes on
            self._event_handler_failed(handler, delivery, e)

    async def _event_task(self, handler: Callable[..., Any], args: tuple[Any, ...],
                          delivery: Any) -> None:
        try:
            await handler(*args)
        except SystemExit as e:
            die(_exit_code(e))
        except BaseException as e:  # noqa: BLE001
            self._event_handler_failed(handler, delivery, e)

    def _event_handler_failed(self, handler: Callable[..., Any], delivery: Any,
                              e: BaseException) -> None:
        _print_exception(e, f"the event handler {_name_of(handler)} failed")
        self.log("error", f"the handler of {delivery.topic!r} raised {type(e).__name__}: {e}",
                 {"topic": delivery.topic, "from": delivery.sender})

    # ------------------------------------------------------------ logs and events

    def log(self, level: str, message: str, fields: dict[str, object] | None = None,
            call_id: int | None = None, logger: str | None = None) -> None:
        pairs: list[tuple[str, str]] = []
        if logger:
            pairs.append(("logger", logger))
        if call_id is not None:
            pairs.append(("call", str(call_id)))
        for key, value in (fields or {}).items():
            pairs.append((cut(str(key), 256), cut(str(value), MAX_LOG_FIELD)))
        record = wire.Log(_LEVELS.get(level.lower(), wire.LOG_INFO),
                          cut(str(message), MAX_LOG_MESSAGE), pairs)
        if not self.channel.send(record):
            # Over a small negotiated frame: the message alone, cut to fit.
            room = max(0, self.channel.send_limit - 64)
            self.channel.send(wire.Log(record.level, cut(record.message, room)))

    def emit(self, topic: str, payload: bytes) -> None:
        if not self.channel.send(wire.Event(topic, payload)):
            raise PluginError("event_too_large",
                              f"an event of {len(payload)} bytes does not fit in a frame of "
                              f"{self.channel.send_limit} bytes")


# ---------------------------------------------------------------- input and output


def decode_input(method: str, raw: bytes) -> Any:
    """The call's input: JSON, or None when empty."""
    if not raw:
        return None
    import json

    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError as e:
        raise PluginError(errors.INVALID_INPUT,
                          f"the input of `{cut(method, 256)}` is not JSON: {e}") from None


def encode_output(method: str, value: Any) -> bytes:
    """A handler's return value as reply bytes: bytes as they are, anything
    else as JSON (None is ``null``)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    import json

    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise PluginError(errors.INVALID_OUTPUT,
                          f"the output of `{cut(method, 256)}` is not JSON: {e}") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: escaped instead
        return json.dumps(value, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_of(e: BaseException) -> tuple[str, str]:
    """The (code, message) an exception is answered with."""
    if isinstance(e, PluginError):
        return e.code, e.message
    # The traceback goes to stderr, which the host keeps in its log.
    _print_exception(e, "a handler raised")
    return errors.PLUGIN_ERROR, f"{type(e).__name__}: {e}"


# ---------------------------------------------------------------- where handlers run


class _Follower:
    """An idle thread of the pool, parked on its own lock until another
    thread gives it an order: read the channel (``job`` None) or run ``job``."""

    __slots__ = ("ident", "wake", "job")

    def __init__(self, ident: int) -> None:
        self.ident = ident
        self.wake = allocate_lock()
        self.wake.acquire()
        self.job: Job | None = None


#: ``Crew._reader`` while a thread started to read has not run yet: no
#: thread's ident, so no handler takes itself for the reader meanwhile.
_STARTING = -1


class Crew:
    """The threads that read the channel and run plain handlers, leader and
    followers: one thread at a time reads (the reader); on a Call for a
    plain handler it hands the reading to an idle thread (or one it starts)
    and runs the handler itself, so no thread wake-up lies between reading
    a call and running it. Done, the thread runs what waits in the backlog,
    else parks until it is needed.

    Threads besides the first reader (the main thread) are started as calls
    need them, at most ``limit`` (the sandbox counts threads against its
    pids limit), so at most ``limit`` handlers run while one thread reads.
    A call that finds no thread free waits in the backlog for the next
    thread done with its handler. When not even one thread can be started
    (``limit`` 0, or the first start fails), handlers run on the reader
    itself: the plugin serves one call at a time, which the protocol
    allows."""

    def __init__(self, session: Session, limit: int) -> None:
        import threading
        from collections import deque

        self._threading = threading
        self._session = session
        self._lock = allocate_lock()
        self._limit = limit
        #: Threads started besides the main thread.
        self._threads = 0
        #: Idle threads, the latest parked last (it is woken first: warm).
        self._idle: list[_Follower] = []
        self._backlog: deque[Job] = deque()
        #: The ident of the thread that reads (or was told to), None when
        #: nobody does.
        self._reader: int | None = None
        #: Jobs a thread took for itself when it handed the reading on,
        #: by thread: run once its dispatch returns.
        self._kept: dict[int, list[Job]] = {}

    def lead(self) -> NoReturn:
        """The calling thread (the main thread) becomes the first reader."""
        me = get_ident()
        with self._lock:
            self._set_reader(me)
        self._serve(me, None)

    def submit(self, func: Callable[..., None], *args: Any) -> None:
        """Has ``func(*args)`` run: called while dispatching a message, by
        the reader or by a thread that just handed the reading on."""
        me = get_ident()
        job = (func, args)
        if self._limit == 0:
            func(*args)
            return
        with self._lock:
            follower = self._idle.pop() if self._idle else None
            if follower is None:
                if self._threads >= self._limit:  # every thread is busy
                    self._backlog.append(job)
                    return
                self._threads += 1
            hand_on = self._reader == me
            if hand_on:
                # The other thread reads; this one runs the job, at once.
                self._kept.setdefault(me, []).append(job)
                self._set_reader(follower.ident if follower is not None else _STARTING)
            elif follower is not None:
                follower.job = job
        if follower is not None:
            follower.wake.release()
        elif not self._start(None if hand_on else job):
            self._start_failed(me, self._kept[me].pop() if hand_on else job, reading=hand_on)

    def _start(self, job: Job | None) -> bool:
        try:
            self._threading.Thread(target=self._begin, args=(job,), name="corral-worker",
                                   daemon=True).start()
            return True
        except RuntimeError:  # "can't start new thread": at the pids limit
            return False

    def _start_failed(self, me: int, job: Job, *,
                      reading: bool) -> None:
        """No thread could be started for ``job`` (``reading``: nor to take
        the reading over, which then stays with this thread)."""
        with self._lock:
            self._threads -= 1
            if reading:
                self._set_reader(me)
            inline = self._threads == 0
            if not inline:
                self._backlog.append(job)
        if inline:
            job[0](*job[1])

    def _begin(self, job: Job | None) -> None:
        me = get_ident()
        if job is None:  # started to read: the reading was left to it
            with self._lock:
                self._set_reader(me)
        self._serve(me, job)

    def _serve(self, me: int, job: Job | None) -> NoReturn:
        """A pool thread's life: read while the reader, run jobs, park."""
        session = self._session
        parked = _Follower(me)
        while True:
            if job is None:
                while self._reader == me:  # only this thread moves the reading from it
                    session.read_one()
                jobs = self._kept.pop(me, [])
            else:
                jobs = [job]
            for func, args in jobs:
                func(*args)
            job = self._next(parked)

    def _next(self, parked: _Follower) -> Job | None:
        """After its jobs: a job from the backlog, else parked until woken
        with a job, or with None to read. (Someone always reads once
        ``lead`` has run: the reading is only ever handed on.)"""
        with self._lock:
            if self._backlog:
                return self._backlog.popleft()
            parked.job = None
            self._idle.append(parked)
        parked.wake.acquire()  # released by the thread that gives the order
        return parked.job

    def _set_reader(self, ident: int) -> None:
        """Under ``_lock``."""
        self._reader = ident
        self._session.reader_thread = ident


class AsyncRunner:
    """One event loop, on a thread of its own, for ``async def`` handlers."""

    def __init__(self, session: Session) -> None:
        import asyncio
        import threading

        self._asyncio = asyncio
        self._session = session
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="corral-asyncio", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, handler: Handler, ctx: Context, raw: bytes) -> None:
        self.loop.call_soon_threadsafe(self._start, handler, ctx, raw)

    def _start(self, handler: Handler, ctx: Context, raw: bytes) -> None:
        task = self.loop.create_task(self._session.run_async(handler, ctx, raw))
        ctx._task = task
        if ctx._cancelled:
            task.cancel()

    def cancel(self, ctx: Context) -> None:
        self.loop.call_soon_threadsafe(lambda: ctx._task is not None and ctx._task.cancel())

    def wait(self, awaitable: Any) -> Any:
        """Runs ``awaitable`` on the loop and waits for it (from a pool thread)."""
        async def run() -> Any:
            return await awaitable

        return self._asyncio.run_coroutine_threadsafe(run(), self.loop).result()


# ---------------------------------------------------------------- helpers


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _call_with_optional(func: Callable[..., Any], arg: Any) -> Any:
    from .plugin import _shape

    arity, _ = _shape(func)
    return func(arg) if arity >= 1 else func()


def _name_of(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


def _exit_code(e: SystemExit) -> int:
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    sys.stderr.write(f"{code}\n")
    return 1


def _print_exception(e: BaseException, what: str) -> None:
    import traceback

    try:
        sys.stderr.write(f"corral: {what}:\n")
        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - stderr is gone
        pass


def serve(plugin: Plugin) -> NoReturn:
    """Serves ``plugin`` on fd 3 until Shutdown or end of stream, then exits
    the process."""
    channel = Channel.from_fd()
    session = Session(plugin, channel)
    session.handshake()
    session.run()
