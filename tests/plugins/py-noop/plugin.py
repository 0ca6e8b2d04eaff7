"""The smallest Python plugin, for the benchmarks: its echo does nothing
but return its input."""

import corral

plugin = corral.Plugin("py-noop", "0.1.0")


@plugin.method()
def echo(input):
    return input


@plugin.method(inline=True)
def echo_inline(input):
    """The same echo, run on the thread that reads the channel (no hand-off
    to a worker thread): what a quick handler can ask for."""
    return input
