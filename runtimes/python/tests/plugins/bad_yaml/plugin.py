from corral.pipeline import BasePlugin


class Bad(BasePlugin):
    pass
