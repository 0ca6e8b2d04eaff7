"""A plugin whose pool can start only as many threads as its settings say
(`{"threads": n}`): past that, starting one fails as it does at the
sandbox's pids limit ("can't start new thread")."""

import threading

import corral

plugin = corral.Plugin("few-threads", "1.0.0")
gate = threading.Event()
left = {"threads": 0}
_start = threading.Thread.start


def start_within_the_limit(self):
    if self.name == "corral-worker":
        if left["threads"] <= 0:
            raise RuntimeError("can't start new thread")
        left["threads"] -= 1
    _start(self)


threading.Thread.start = start_within_the_limit


@plugin.on_init
def limit_threads(config):
    left["threads"] = config.get("threads", 0)


@plugin.method(inline=True)
def reader(input):
    return threading.get_ident()


@plugin.method()
def whoami(input):
    return threading.get_ident()


@plugin.method()
def at_gate(ctx, input):
    ctx.info("at the gate")
    return {"released": gate.wait(20), "thread": threading.get_ident()}


@plugin.method(inline=True)
def open_gate(input):
    gate.set()
    return "open"
