"""The corral side of the comparison: a no-op plugin on the SDK."""

import corral

plugin = corral.Plugin("noop", "0.1.0")


@plugin.method()
def noop(input):
    return None


@plugin.method(inline=True)
def noop_inline(input):
    return None
