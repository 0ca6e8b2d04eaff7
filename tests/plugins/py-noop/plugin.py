"""The smallest Python plugin, for the benchmarks: its echo does nothing
but return its input."""

import corral

plugin = corral.Plugin("py-noop", "0.1.0")


@plugin.method()
def echo(input):
    return input
