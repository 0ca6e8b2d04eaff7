"""Text nodes for a pipeline, written as seed 002 describes plugins.

The only change a seed-002 plugin needs for corral is its import line:
`from pipeline.plugin import ...` becomes `from corral.pipeline import ...`.

Calls (through corrald):

    corral call text-nodes word_count --input '{"inputs": {"text": "one two three"}}'
    corral call text-nodes text_transform \
        --input '{"inputs": {"text": "hello"}, "parameters": {"mode": "upper"}}'
    corral call text-nodes get_node_types
"""

from corral.pipeline import (
    BaseNode,
    BasePlugin,
    NodeSpecification,
    ParameterSpecification,
    PortSpecification,
    ResourceRequirement,
)


class TextNodesPlugin(BasePlugin):
    """Provides the word_count and text_transform nodes."""

    def initialize(self, context):
        # context.config holds the plugin's settings from the operator.
        self.max_chars = int(context.config.get("max_chars", 100_000))
        self.initialized = True
        self.logger.info(f"Initialized {self.manifest.name} plugin")

    def shutdown(self):
        self.initialized = False

    def get_node_types(self):
        text_in = PortSpecification(name="text", type="string", display_name="Text",
                                    description="The text to work on")
        return [
            NodeSpecification(
                node_type="word_count",
                display_name="Word Count",
                category="Text",
                description="Counts the words and characters of a text",
                inputs=[text_in],
                outputs=[PortSpecification(name="words", type="integer", display_name="Words",
                                           description="Number of words")],
            ),
            NodeSpecification(
                node_type="text_transform",
                display_name="Text Transform",
                category="Text",
                description="Changes the case of a text",
                inputs=[text_in],
                outputs=[PortSpecification(name="output", type="string", display_name="Output",
                                           description="The transformed text")],
                parameters=[
                    ParameterSpecification(
                        name="mode",
                        type="string",
                        display_name="Mode",
                        description="How to transform the text",
                        default="upper",
                        constraints={"enum": ["upper", "lower", "title"]},
                        ui_component="select",
                    )
                ],
            ),
        ]

    def create_node(self, node_type, parameters):
        if node_type == "word_count":
            return WordCountNode(parameters)
        if node_type == "text_transform":
            return TextTransformNode(parameters)
        raise ValueError(f"Unknown node type: {node_type}")


class WordCountNode(BaseNode):
    def validate_inputs(self, inputs):
        return isinstance(inputs.get("text"), str)

    def execute(self, inputs, context):
        text = inputs["text"]
        context.info("counting", chars=len(text))
        return {"words": len(text.split()), "chars": len(text)}

    def estimate_resources(self, inputs):
        return ResourceRequirement(cpu_cores=0.1, memory_mb=1)


class TextTransformNode(BaseNode):
    MODES = {"upper": str.upper, "lower": str.lower, "title": str.title}

    def validate_inputs(self, inputs):
        return isinstance(inputs.get("text"), str)

    def execute(self, inputs, context):
        mode = self.parameters.get("mode", "upper")
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {sorted(self.MODES)}, not {mode!r}")
        return {"output": self.MODES[mode](inputs["text"])}
