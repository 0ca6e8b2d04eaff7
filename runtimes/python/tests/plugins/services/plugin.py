"""A plugin that uses every host service, for the fake host to answer."""

import base64
import threading

import corral

plugin = corral.Plugin("services", "1.0.0")
seen = []
seen_changed = threading.Condition()


def record(payload, delivery):
    with seen_changed:
        seen.append({"payload": payload, "topic": delivery.topic, "from": delivery.sender})
        seen_changed.notify_all()
    # An event handler may use services too (call id 0).
    corral.host.publish("echo", payload)


@plugin.on_init
def subscribe_at_start(config):
    # Set-up cannot wait for a response: this goes out after Ready.
    corral.host.subscribe("boot:*", record)


@plugin.method()
def call(ctx, input):
    return ctx.host.call_plugin(input["plugin"], input["method"], input.get("input"),
                                **({"timeout_ms": input["timeout_ms"]} if "timeout_ms" in input
                                   else {}))


@plugin.method(inline=True)
def call_inline(ctx, input):
    return ctx.host.call_plugin("dep", "m", input)


@plugin.method()
async def call_async(ctx, input):
    first = await ctx.host.call_plugin("dep", "a", input)
    second = await corral.host.kv.get("t", "k")
    return [first, second]


@plugin.method()
def everything(ctx, input):
    h = corral.host
    return {
        "plugins": h.list_plugins(),
        "published": h.publish("orders.created", {"id": 1}),
        "get": h.kv.get("users", "u1"),
        "put": h.kv.put("users", "u1", {"n": 1}),
        "deleted": h.kv.delete("users", "u1"),
        "list": h.kv.list("users", prefix="u", limit=10),
        "s3get": base64.b64encode(h.s3.get("data", "a.txt")["body"]).decode(),
        "etag": h.s3.put("data", "a.txt", b"\x00hi", content_type="text/plain"),
        "s3list": h.s3.list("data", after="a"),
        "s3delete": h.s3.delete("data", "a.txt"),
        "settings": h.settings(),
    }


@plugin.method()
def typed_error(ctx, input):
    try:
        ctx.host.kv.put("secrets", "k", "v")
    except corral.PermissionDenied as e:
        return {"class": type(e).__name__, "code": e.code, "permission": e.permission,
                "message": e.message}
    return "no error"


@plugin.method()
def quota(ctx, input):
    try:
        ctx.host.kv.put("t", "k", "v" * 10)
    except corral.QuotaExceeded as e:
        return {"quota_bytes": e.quota_bytes, "used_bytes": e.used_bytes}
    return "no error"


@plugin.method()
def uncaught(ctx, input):
    return ctx.host.kv.get("secrets", "k")


@plugin.method()
def subscribe(ctx, input):
    ctx.host.subscribe(input, record)
    return "subscribed"


@plugin.method()
def unsubscribe(ctx, input):
    return ctx.host.unsubscribe(input)


@plugin.method()
def seen_events(ctx, input):
    with seen_changed:
        seen_changed.wait_for(lambda: len(seen) >= input, timeout=20)
        return list(seen)


@plugin.method()
def wait_cancel(ctx, input):
    try:
        ctx.host.call_plugin("dep", "slow", None)
    except corral.Cancelled as e:
        ctx.info("cancelled while waiting", why=e.message)
        raise
    return "answered"


@plugin.method()
def echo(input):
    return input


@plugin.method()
def big_publish(ctx, input):
    return ctx.host.publish("big", "x" * input)
