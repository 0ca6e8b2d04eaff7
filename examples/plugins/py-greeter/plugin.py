"""A Python plugin written with corral's decorators.

    corral call py-greeter greet --input '{"name": "Ada"}'
    corral call py-greeter text.count --input '{"text": "one two three"}'
"""

import asyncio
import logging
import time

import corral

plugin = corral.Plugin("py-greeter", "0.1.0")
log = logging.getLogger("py-greeter")


@plugin.method()
def greet(ctx, input):
    """{"name": "Ada"} -> {"greeting": "Hello, Ada!"}; the greeting word
    comes from the plugin's settings ({"greeting": "Hi"}), if any."""
    name = (input or {}).get("name")
    if not name:
        raise corral.PluginError("empty_name", "say who to greet")
    word = ctx.config.get("greeting", "Hello") if isinstance(ctx.config, dict) else "Hello"
    log.info("greeting %s", name)
    return {"greeting": f"{word}, {name}!"}


@plugin.method("text.count")
async def count(input):
    """{"text": "..."} -> {"words": n, "chars": n}"""
    text = (input or {}).get("text", "")
    await asyncio.sleep(0)
    return {"words": len(text.split()), "chars": len(text)}


@plugin.method()
def sleep(ctx, input):
    """Sleeps {"ms": n} milliseconds, stopping early when cancelled."""
    deadline = ctx.remaining
    ms = (input or {}).get("ms", 0)
    waited = 0
    while waited < ms and not ctx.cancelled:
        step = min(10, ms - waited)
        if deadline is not None and step / 1000 > deadline:
            step = max(1, int(deadline * 1000))
        time.sleep(step / 1000)
        waited += step
    return {"slept_ms": waited, "cancelled": ctx.cancelled}
