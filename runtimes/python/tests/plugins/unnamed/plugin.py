import corral

plugin = corral.Plugin()


@plugin.method()
def hi(input):
    return "hi"
