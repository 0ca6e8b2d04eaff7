"""Host services (PROTOCOL.md section 9, protocol version 2): the plugin's
side of Request, Response and Deliver, and the API handlers use.

    @plugin.method()
    def save(ctx, input):
        ctx.host.kv.put("users", input["id"], input)
        upper = ctx.host.call_plugin("text-utils", "upper", {"text": input["name"]})
        ctx.host.publish("users.saved", {"id": input["id"]})
        return upper

``ctx.host`` (or ``corral.host``, which finds the call it serves by
itself) sends each request with the id of the call being served, so the
host bounds it by that call's remaining time. In a plain handler a
request blocks until its response; in an ``async def`` handler the same
methods return awaitables (``await ctx.host.kv.get(...)``). An ``Err``
response raises the exception class of its code (``PermissionDenied``,
``QuotaExceeded``, ... in ``corral.errors``).

How waiting works, and why nothing is lost meanwhile: one thread at a
time reads every frame (the reader, ``session.Crew``; a plain handler's
thread hands the reading on before it runs the handler). A request made
on any other thread waits on a lock that the reader releases when the
response comes; one made on the event loop waits on a future the reader
resolves through the loop. A request made on the reader's own thread (an
inline handler, or any handler when no other thread can be had) reads the
channel itself until its response arrives: Ping, Cancel and other
responses are handled as they come, Calls, Deliveries and Shutdown are
queued for the serve loop, which takes them up as soon as the handler
returns.
"""

from __future__ import annotations

import sys
from _thread import allocate_lock, get_ident

from . import wire
from .errors import Cancelled, ServiceError, ServiceUnavailable, service_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

    from .context import Context
    from .session import Session

    Transform = Callable[[Any], Any]


class Delivery:
    """An event the host delivered: ``topic`` as the plugin names it,
    ``sender`` the publishing plugin (``client`` for an API publisher),
    ``payload`` the JSON value (bytes when it is not JSON)."""

    __slots__ = ("topic", "sender", "payload")

    def __init__(self, topic: str, sender: str, payload: Any) -> None:
        self.topic = topic
        self.sender = sender
        self.payload = payload

    def __repr__(self) -> str:
        return f"Delivery(topic={self.topic!r}, sender={self.sender!r}, payload={self.payload!r})"


def pattern_matches(pattern: str, topic: str) -> bool:
    """``*`` matches any run of characters (``data:*`` matches
    ``data:saved``); everything else matches itself. The host's rule."""
    parts = pattern.split("*")
    if len(parts) == 1:
        return pattern == topic
    first, last = parts[0], parts[-1]
    if not topic.startswith(first) or len(topic) < len(first) + len(last):
        return False
    if not topic.endswith(last):
        return False
    at, end = len(first), len(topic) - len(last)
    for middle in parts[1:-1]:
        found = topic.find(middle, at, end)
        if found < 0:
            return False
        at = found + len(middle)
    return True


class _Waiter:
    """One request waiting for its response: a lock for a thread, a future
    for the event loop."""

    __slots__ = ("call_id", "what", "outcome", "_lock", "_loop", "_future", "_callback")

    def __init__(self, call_id: int, what: str, loop: Any = None,
                 callback: Callable[[Any], None] | None = None) -> None:
        self.call_id = call_id
        #: Called with the outcome instead of waking anyone (nobody waits).
        self._callback = callback
        self.what = what
        #: The Response, or an exception to raise; None until settled.
        self.outcome: wire.Response | BaseException | None = None
        self._loop = loop
        self._future = loop.create_future() if loop is not None else None
        self._lock = None
        if loop is None and callback is None:
            self._lock = allocate_lock()
            self._lock.acquire()

    def settle(self, outcome: wire.Response | BaseException) -> None:
        """Called once, by whoever took the waiter out of the table."""
        self.outcome = outcome
        if self._callback is not None:
            self._callback(outcome)
        elif self._future is not None:
            self._loop.call_soon_threadsafe(_resolve, self._future, outcome)
        elif self._lock is not None:
            self._lock.release()

    def wait(self) -> wire.Response | BaseException:
        assert self._lock is not None
        self._lock.acquire()
        assert self.outcome is not None
        return self.outcome


def _resolve(future: Any, outcome: Any) -> None:
    if not future.done():
        future.set_result(outcome)


class Services:
    """The session's half of host services: request ids, the requests
    waiting for responses, and the subscriptions' handlers."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._lock = allocate_lock()
        self._next_id = 1
        self._waiting: dict[int, _Waiter] = {}
        #: Handlers by pattern, in subscription order.
        self._handlers: dict[str, list[Callable[..., Any]]] = {}
        #: Patterns subscribed to before Ready, sent once the plugin is ready.
        self._early: list[str] = []
        #: The protocol version the host chose (services need 2).
        self.version = 1
        self.ready = False

    # ------------------------------------------------------------ requests

    def request(self, call_id: int, service: str, operation: str, payload: dict[str, Any],
                transform: Transform) -> Any:
        """Sends one request. Returns ``transform(body)`` once the response
        comes; an awaitable of it when called on a running event loop."""
        loop = _running_loop()
        try:
            waiter = self._send(call_id, service, operation, payload, loop)
        except ServiceError as e:
            if loop is None:
                raise
            return _raise(e)
        if loop is not None:
            return _await_outcome(waiter, transform)
        if get_ident() == self._session.reader_thread:
            self._session.pump_until(lambda: waiter.outcome is not None)
        else:
            waiter.wait()
        return transform(_body(waiter))

    def _send(self, call_id: int, service: str, operation: str, payload: dict[str, Any],
              loop: Any, callback: Callable[[Any], None] | None = None) -> _Waiter:
        what = f"{service}.{operation}"
        if not self.ready:
            raise ServiceUnavailable(
                f"{what}: host services can be used once the plugin is ready (in a handler "
                "or an event handler), not while it sets up", details={"service": service})
        if self.version < wire.SERVICES_VERSION:
            raise ServiceUnavailable(
                f"{what}: the host speaks protocol version {self.version}, which has no "
                "host services", details={"service": service})
        import json

        data = json.dumps(payload, ensure_ascii=False, allow_nan=False,
                          separators=(",", ":")).encode("utf-8", "replace")
        with self._lock:
            request_id = self._next_id
            self._next_id += 1
            waiter = _Waiter(call_id, what, loop, callback)
            self._waiting[request_id] = waiter
        message = wire.Request(request_id, call_id, service, operation, data)
        if not self._session.channel.send(message):
            with self._lock:
                self._waiting.pop(request_id, None)
            from .errors import PayloadTooLarge

            raise PayloadTooLarge(
                f"{what}: a request of {len(data)} bytes does not fit in a frame of "
                f"{self._session.channel.send_limit} bytes")
        return waiter

    def on_response(self, response: wire.Response) -> None:
        with self._lock:
            waiter = self._waiting.pop(response.id, None)
        # None: the call it served was cancelled and gave up on it.
        if waiter is not None:
            waiter.settle(response)

    def cancel_call(self, call_id: int) -> None:
        """The host cancelled ``call_id``: its requests stop waiting."""
        with self._lock:
            ids = [i for i, w in self._waiting.items() if w.call_id == call_id]
            waiters = [self._waiting.pop(i) for i in ids]
        for waiter in waiters:
            waiter.settle(Cancelled(f"the host cancelled the call while it waited for "
                                    f"{waiter.what}"))

    # ------------------------------------------------------------ subscriptions

    def subscribe(self, call_id: int, pattern: str, handler: Callable[..., Any]) -> Any:
        if not callable(handler):
            raise TypeError("subscribe(pattern, handler): the handler is not callable")

        def added(_body: Any) -> None:
            with self._lock:
                self._handlers.setdefault(pattern, []).append(handler)

        if not self.ready:
            # Set-up (on_init, seed 002's initialize) cannot wait for a
            # response: the subscription goes out right after Ready.
            added(None)
            self._early.append(pattern)
            return None
        return self.request(call_id, "events", "subscribe", {"pattern": pattern}, added)

    def unsubscribe(self, call_id: int, pattern: str,
                    handler: Callable[..., Any] | None = None) -> Any:
        with self._lock:
            handlers = self._handlers.get(pattern, [])
            if handler is None:
                handlers.clear()
            elif handler in handlers:
                handlers.remove(handler)
            last = not handlers
            if last:
                self._handlers.pop(pattern, None)
        if not last:
            return True
        return self.request(call_id, "events", "unsubscribe", {"pattern": pattern},
                            lambda body: bool(body.get("removed")))

    def send_early_subscriptions(self) -> None:
        """After Ready: the subscriptions set-up asked for. A refusal is
        logged, since there is no caller left to raise it to."""
        self.ready = True
        early, self._early = self._early, []
        for pattern in early:
            def done(outcome: wire.Response | BaseException, pattern: str = pattern) -> None:
                if isinstance(outcome, wire.Response) and outcome.error is None:
                    return
                error = _error_of(outcome) if isinstance(outcome, wire.Response) else outcome
                with self._lock:
                    self._handlers.pop(pattern, None)
                self._session.log("error", f"subscribing to {pattern!r} failed: {error}")
            try:
                self._send(0, "events", "subscribe", {"pattern": pattern}, None, done)
            except ServiceError as e:
                done(e)

    def on_deliver(self, message: wire.Deliver) -> None:
        """Runs every handler whose pattern matches the topic, on a pool
        thread (plain handlers) or the event loop (``async def``)."""
        with self._lock:
            handlers = [h for pattern, hs in self._handlers.items()
                        if pattern_matches(pattern, message.topic) for h in hs]
        if not handlers:
            return  # unsubscribed while it travelled
        delivery = Delivery(message.topic, message.sender, _payload(message.payload))
        for handler in handlers:
            self._session.run_event_handler(handler, delivery)


def _running_loop() -> Any:
    """The event loop running on this thread, or None (cheap: asyncio is
    only looked at when something imported it)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    return asyncio._get_running_loop()


async def _await_outcome(waiter: _Waiter, transform: Transform) -> Any:
    assert waiter._future is not None
    await waiter._future
    return transform(_body(waiter))


async def _raise(e: BaseException) -> Any:
    raise e


def _error_of(response: wire.Response) -> ServiceError:
    assert response.error is not None
    code, message, raw = response.error
    import json

    try:
        details = json.loads(raw.decode("utf-8")) if raw else {}
    except ValueError:
        details = {}
    if not isinstance(details, dict):
        details = {}
    return service_error(code, message, details)


def _body(waiter: _Waiter) -> Any:
    outcome = waiter.outcome
    if isinstance(outcome, BaseException):
        raise outcome
    assert isinstance(outcome, wire.Response)
    if outcome.error is not None:
        raise _error_of(outcome)
    import json

    try:
        return json.loads((outcome.body or b"{}").decode("utf-8"))
    except ValueError as e:
        raise ServiceError(f"{waiter.what}: the host's response is not JSON: {e}",
                           code="invalid_response") from None


def _payload(raw: bytes) -> Any:
    import json

    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError:
        return raw


# ---------------------------------------------------------------- the API


class Host:
    """Host services for one call (``ctx.host``) or for whichever call the
    current thread or task serves (``corral.host``; outside any call, such
    as in an event handler, requests carry call id 0)."""

    __slots__ = ("_ctx", "kv", "s3")

    def __init__(self, ctx: Context | None = None) -> None:
        self._ctx = ctx
        #: Key-value tables (``kv.get/put/delete/list``).
        self.kv = KeyValue(self)
        #: S3 buckets through the host's client (``s3.get/put/list/delete``).
        self.s3 = Buckets(self)

    def _where(self) -> tuple[Services, int]:
        from .session import active_session, current_call

        ctx = self._ctx if self._ctx is not None else current_call.get()
        session = ctx._session if ctx is not None else active_session()
        if session is None:
            raise ServiceUnavailable("host services exist only in a plugin corral runs",
                                     details={"service": ""})
        return session.services, ctx.call_id if ctx is not None else 0

    def _request(self, service: str, operation: str, payload: dict[str, Any],
                 transform: Transform = lambda body: body) -> Any:
        services, call_id = self._where()
        return services.request(call_id, service, operation, payload, transform)

    # -- plugins

    def call_plugin(self, plugin: str, method: str, input: Any = None, *,
                    timeout_ms: int | None = None) -> Any:
        """Calls ``method`` of ``plugin`` (a dependency the policy grants)
        and returns its output. Its errors come back typed: ``Timeout``,
        ``Crashed``, ``DependencyError`` (its own error, ``plugin_code``),
        ``PermissionDenied``."""
        payload: dict[str, Any] = {"plugin": plugin, "method": method, "input": input}
        if timeout_ms is not None:
            payload["timeout_ms"] = int(timeout_ms)
        return self._request("plugins", "call", payload, lambda body: body.get("output"))

    def list_plugins(self) -> Any:
        """The dependencies this plugin may call."""
        return self._request("plugins", "list", {}, lambda body: list(body.get("plugins", [])))

    # -- events

    def publish(self, topic: str, payload: Any = None) -> Any:
        """Publishes ``payload`` (JSON) to ``topic``; returns
        ``{"delivered": n, "dropped": n}``."""
        return self._request("events", "publish", {"topic": topic, "payload": payload})

    def subscribe(self, pattern: str, handler: Callable[..., Any]) -> Any:
        """Runs ``handler(payload)`` or ``handler(payload, delivery)`` for
        each event on a topic ``pattern`` matches (``*`` is any run of
        characters). Called during set-up, the subscription is made as
        soon as the plugin is ready."""
        services, call_id = self._where()
        return services.subscribe(call_id, pattern, handler)

    def unsubscribe(self, pattern: str, handler: Callable[..., Any] | None = None) -> Any:
        """Removes ``handler`` (or every handler) of ``pattern``; the host
        stops delivering once none is left."""
        services, call_id = self._where()
        return services.unsubscribe(call_id, pattern, handler)

    # -- settings

    def settings(self) -> Any:
        """The plugin's current settings, from the host."""
        return self._request("config", "get", {})


class KeyValue:
    """Key-value tables the policy grants, named in the plugin's terms
    (the host maps them to real, prefixed names)."""

    __slots__ = ("_host",)

    def __init__(self, host: Host) -> None:
        self._host = host

    def get(self, table: str, key: str) -> Any:
        """The value under ``key`` (JSON), or None."""
        return self._host._request("kv", "get", {"table": table, "key": key},
                                   lambda body: body.get("value"))

    def put(self, table: str, key: str, value: Any) -> Any:
        """Stores ``value``; ``QuotaExceeded`` when it would pass the quota."""
        return self._host._request("kv", "put", {"table": table, "key": key, "value": value},
                                   lambda body: None)

    def delete(self, table: str, key: str) -> Any:
        """True when there was a value to delete."""
        return self._host._request("kv", "delete", {"table": table, "key": key},
                                   lambda body: bool(body.get("deleted")))

    def list(self, table: str, prefix: str | None = None, after: str | None = None,
             limit: int | None = None) -> Any:
        """``{"keys": [...], "next": key or None}``: keys in byte order;
        ``next`` is the ``after`` of the following page."""
        payload: dict[str, Any] = {"table": table}
        for name, value in (("prefix", prefix), ("after", after), ("limit", limit)):
            if value is not None:
                payload[name] = value
        return self._host._request("kv", "list", payload)


class Buckets:
    """S3 buckets the policy grants, reached through the host's S3 client
    (the plugin never sees a credential)."""

    __slots__ = ("_host",)

    def __init__(self, host: Host) -> None:
        self._host = host

    def get(self, bucket: str, key: str) -> Any:
        """``{"body": bytes, "size", "etag", "content_type"}``."""
        import base64

        def decoded(body: Any) -> Any:
            body = dict(body)
            body["body"] = base64.b64decode(body.get("body") or "")
            return body

        return self._host._request("s3", "get", {"bucket": bucket, "key": key}, decoded)

    def put(self, bucket: str, key: str, body: bytes | str,
            content_type: str | None = None) -> Any:
        """Stores ``body`` (text is UTF-8); returns the object's etag."""
        import base64

        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        payload: dict[str, Any] = {"bucket": bucket, "key": key,
                                   "body": base64.b64encode(data).decode("ascii")}
        if content_type is not None:
            payload["content_type"] = content_type
        return self._host._request("s3", "put", payload, lambda b: b.get("etag"))

    def list(self, bucket: str, prefix: str | None = None, after: str | None = None,
             limit: int | None = None) -> Any:
        """``{"objects": [{"key", "size", "etag", "last_modified_ms"}], "next"}``."""
        payload: dict[str, Any] = {"bucket": bucket}
        for name, value in (("prefix", prefix), ("after", after), ("limit", limit)):
            if value is not None:
                payload[name] = value
        return self._host._request("s3", "list", payload)

    def delete(self, bucket: str, key: str) -> Any:
        return self._host._request("s3", "delete", {"bucket": bucket, "key": key},
                                   lambda body: None)
