import asyncio

from corral.pipeline import BaseNode, BasePlugin


class EdgePlugin(BasePlugin):
    def initialize(self, context):
        self.context = context
        self.logger.info("initialized with %s", sorted(context.config))

    def create_node(self, node_type, parameters):
        return {"fallback": FallbackNode, "picky": PickyNode, "async_node": AsyncNode,
                "manifest": ManifestNode}[node_type](self, parameters)


class Node(BaseNode):
    def __init__(self, plugin, parameters):
        super().__init__("node-1", parameters)
        self.plugin = plugin


class FallbackNode(Node):
    def execute(self, inputs, context):
        if inputs.get("fail"):
            raise RuntimeError("broken")
        return {"ok": True, "node_id": self.node_id}

    def on_error(self, error, context):
        if self.parameters.get("fallback"):
            return {"fallback": str(error)}
        return None


class PickyNode(Node):
    def validate_inputs(self, inputs):
        return "x" in inputs

    def execute(self, inputs, context):
        return {"x": inputs["x"]}


class AsyncNode(Node):
    async def execute(self, inputs, context):
        await asyncio.sleep(0)
        return {"sum": sum(inputs["values"])}


class ManifestNode(Node):
    def execute(self, inputs, context):
        m = self.plugin.manifest
        return {"name": m.name, "version": m.version, "author": m.author,
                "description": m.description, "extra": m.extra,
                "config": self.plugin.context.config,
                "memory": self.plugin.context.available_resources.available_memory}
