from corral.pipeline import BasePlugin


class Broken(BasePlugin):
    def initialize(self, context):
        raise RuntimeError("cannot reach the database")
