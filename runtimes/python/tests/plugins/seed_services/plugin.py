"""Seed 002's shape using host services: initialize subscribes through its
context, a node reads a table through the call's context."""

from corral.pipeline import BaseNode, BasePlugin


class Plugin(BasePlugin):
    def initialize(self, context):
        self.events = []
        context.host.subscribe("jobs:*", self.events.append)

    def create_node(self, node_type, parameters):
        return Lookup(parameters)


class Lookup(BaseNode):
    def execute(self, inputs, context):
        return {"value": context.host.kv.get("cache", inputs["key"])}
