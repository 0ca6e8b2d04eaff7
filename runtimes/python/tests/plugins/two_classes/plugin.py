from corral.pipeline import BasePlugin


class One(BasePlugin):
    pass


class Two(BasePlugin):
    pass
