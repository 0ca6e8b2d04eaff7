"""A decorator plugin exercising the SDK: named `hello` 0.1.0 like the
golden vectors of PROTOCOL.md, so its handshake and replies can be compared
byte for byte with them."""

import asyncio
import logging
import threading
import time

import helper  # from this directory: the entry's directory is on sys.path

import corral

plugin = corral.Plugin("hello", "0.1.0")
log = logging.getLogger("hello")
gate = threading.Event()


@plugin.method()
def greet(ctx, input):
    if not input.get("name"):
        raise corral.PluginError("empty_name", "say who")
    return {"greeting": f"Hello, {input['name']}!"}


@plugin.method("echo")
def echo_it(input):
    return input


@plugin.method(inline=True)
def thread_name(input):
    return threading.current_thread().name


@plugin.method()
def nothing():
    return None


@plugin.method()
def raw(input):
    return bytes([0xFF, 0x00, 0xFE])


@plugin.method()
def boom(input):
    raise ValueError("no good")


@plugin.method()
def not_json(input):
    return {"a set": {1, 2}}


@plugin.method()
def big(input):
    return "x" * input["bytes"]


@plugin.method()
def config(ctx, input):
    return {"config": ctx.config, "pids": ctx.limits.pids}


@plugin.method()
def logs(ctx, input):
    log.info("from logging %s", "info")
    log.debug("below the level")
    ctx.warning("from the context", key="value")
    ctx.emit("progress", {"done": 1})
    return helper.TAG


@plugin.method()
def wait_for_cancel(ctx, input):
    """Runs until the host cancels it (a plain handler polls the flag)."""
    ctx.info("waiting for cancel")
    deadline = time.monotonic() + 20
    while not ctx.cancelled and time.monotonic() < deadline:
        time.sleep(0.005)
    return {"cancelled": ctx.cancelled}


@plugin.method()
async def async_wait(ctx, input):
    """Awaits until the host cancels it: the task is cancelled."""
    ctx.info("waiting for cancel")
    try:
        await asyncio.sleep(20)
    except asyncio.CancelledError:
        log.info("async task cancelled")
        raise
    return "not cancelled"


@plugin.method()
async def async_add(input):
    await asyncio.sleep(0)
    return input["a"] + input["b"]


@plugin.method()
async def async_boom(input):
    await asyncio.sleep(0)
    raise KeyError("missing")


@plugin.method()
def block(ctx, input):
    """Blocks until `release` runs: proves two plain calls run at once."""
    ctx.info("blocking")
    return {"released": gate.wait(20), "thread": threading.current_thread().name}


@plugin.method()
def release(input):
    gate.set()
    return "ok"


@plugin.method(inline=True)
def reader(input):
    """The thread reading the channel now (an inline handler runs there)."""
    return threading.get_ident()


@plugin.method()
def whoami(input):
    return threading.get_ident()


@plugin.method(inline=True)
def threads(input):
    return threading.active_count()


@plugin.method()
def at_gate(ctx, input):
    """Waits for `open_gate`, which runs on the reading thread."""
    ctx.info("at the gate")
    return {"released": gate.wait(20), "thread": threading.get_ident()}


@plugin.method(inline=True)
def open_gate(input):
    gate.set()
    return "open"


@plugin.method()
def hold_until_cancelled(ctx, input):
    ctx.info("holding")
    deadline = time.monotonic() + 20
    while not ctx.cancelled and time.monotonic() < deadline:
        time.sleep(0.005)
    return {"cancelled": ctx.cancelled, "thread": threading.get_ident()}


@plugin.method()
def sleep_then_answer(input):
    time.sleep(input / 1000)
    return "slept"


@plugin.method()
def exit_now(input):
    raise SystemExit(input)


@plugin.on_shutdown
def bye():
    print("shutdown hook ran", flush=True)
