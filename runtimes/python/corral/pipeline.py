"""Seed 002's plugin shape on corral: a plugin class with ``initialize`` /
``shutdown`` / ``get_node_types`` / ``create_node``, and nodes with
``execute(inputs, context)``, served as corral methods.

The names are seed 002's (``BasePlugin``, ``BaseNode``, ``PluginManifest``,
``NodeSpecification``, ``PortSpecification``, ``ParameterSpecification``,
``ResourceRequirement``, ``PluginContext``, ``ResourcePool``), so a seed-002
plugin changes one line: ``from pipeline.plugin import ...`` becomes
``from corral.pipeline import ...``.

How the host calls it (methods of the corral plugin):

- ``<node_type>`` with input ``{"inputs": {...}, "parameters": {...}}``
  (both optional, ``node_id`` too): ``create_node(node_type, parameters)``,
  then ``validate_inputs(inputs)`` (False is an ``invalid_input`` error),
  then ``execute(inputs, context)``, whose dict is the output. When
  ``execute`` raises, ``on_error(error, context)`` may return a fallback
  output; otherwise the error is the reply (``plugin_error``).
- ``execute`` with ``{"node_type": ..., "inputs": ..., "parameters": ...}``:
  the same, naming the node type in the input.
- ``get_node_types``: the node specifications as JSON.

The plugin class is instantiated once per process with its
``PluginManifest`` (read from the package's ``plugin.yaml``);
``initialize(PluginContext)`` runs after the host's Init with the plugin's
settings in ``context.config`` (an exception there fails the start), and
``shutdown()`` when the host asks the plugin to stop. The ``context`` a
node's ``execute`` receives is the call's ``corral.Context`` (logging,
``cancelled``, ``config``, ``emit``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field, fields, is_dataclass

from . import errors
from .channel import EX_CONFIG, die
from .context import Context as _Context
from .errors import PluginError
from .plugin import Plugin

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

    from .context import Context


# ---------------------------------------------------------------- seed 002's types


@dataclass
class PluginManifest:
    """``plugin.yaml``, as seed 002 describes it. Keys this class does not
    name are kept in ``extra``."""

    name: str
    version: str
    author: str = ""
    description: str = ""
    license: str = ""
    dependencies: list[str] = field(default_factory=list)
    node_types: list[str] = field(default_factory=list)
    permissions: list[str] = field(default_factory=list)
    entry_point: str = ""
    min_engine_version: str = ""
    max_engine_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any], fallback_name: str,
                  fallback_version: str) -> PluginManifest:
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        values["name"] = str(values.get("name") or fallback_name)
        values["version"] = str(values.get("version") or fallback_version)
        for key in ("dependencies", "node_types", "permissions"):
            if not isinstance(values.get(key, []), list):
                values[key] = [values[key]]
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})


@dataclass
class ResourceRequirement:
    cpu_cores: float = 1.0
    memory_mb: int = 0
    gpu_count: int = 0


@dataclass
class ResourcePool:
    """What the sandbox gives the plugin: CPU and memory (MiB; 0 when
    unlimited), from the host's Init."""

    available_cpu: float = 1.0
    available_memory: int = 0


@dataclass
class PortSpecification:
    name: str
    type: str = "any"
    display_name: str = ""
    description: str = ""
    required: bool = True
    default: Any = None
    multiple: bool = False


@dataclass
class ParameterSpecification:
    name: str
    type: str = "string"
    display_name: str = ""
    description: str = ""
    default: Any = None
    constraints: dict[str, Any] | None = None
    ui_component: str = "input"


@dataclass
class NodeSpecification:
    node_type: str
    display_name: str = ""
    category: str = ""
    description: str = ""
    icon: str | None = None
    color: str | None = None
    inputs: list[PortSpecification] = field(default_factory=list)
    outputs: list[PortSpecification] = field(default_factory=list)
    parameters: list[ParameterSpecification] = field(default_factory=list)
    resource_requirements: ResourceRequirement | None = None


def _host() -> Any:
    from .services import Host

    return Host()


@dataclass
class PluginContext:
    """What ``initialize`` receives. ``host`` is corral's host services
    (``corral.host``): set-up may subscribe (the subscription goes out once
    the plugin is ready); other requests belong in ``execute``."""

    engine_version: str
    available_resources: ResourcePool
    config: dict[str, Any] = field(default_factory=dict)
    host: Any = field(default_factory=_host, repr=False, compare=False)


class BasePlugin:
    """Seed 002's plugin base class. The defaults let a plugin leave out
    what it does not need."""

    def __init__(self, manifest: PluginManifest) -> None:
        self.manifest = manifest
        self.logger = self.get_logger()
        self.initialized = False

    def initialize(self, context: PluginContext) -> None:
        self.initialized = True

    def shutdown(self) -> None:
        self.initialized = False

    def get_node_types(self) -> list[NodeSpecification]:
        return []

    def create_node(self, node_type: str, parameters: dict[str, Any]) -> BaseNode:
        raise ValueError(f"Unknown node type: {node_type}")

    def validate_permissions(self, required: list[str]) -> bool:
        return all(perm in self.manifest.permissions for perm in required)

    def get_logger(self) -> logging.Logger:
        return logging.getLogger(f"plugin.{self.manifest.name}")


class BaseNode:
    """Seed 002's node base class. Takes ``(node_id, parameters)`` or just
    ``(parameters)``: the seed's own example does the second."""

    def __init__(self, node_id: Any = None, parameters: dict[str, Any] | None = None) -> None:
        if parameters is None and isinstance(node_id, dict):
            node_id, parameters = None, node_id
        self.node_id = node_id
        self.parameters = parameters or {}
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}

    def validate_inputs(self, inputs: dict[str, Any]) -> bool:
        return True

    def execute(self, inputs: dict[str, Any], context: Any) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__}.execute")

    def estimate_resources(self, inputs: dict[str, Any]) -> ResourceRequirement:
        return ResourceRequirement()

    def on_error(self, error: Exception, context: Any) -> dict[str, Any] | None:
        return None

    def cache_key(self, inputs: dict[str, Any]) -> str:
        key_data = {
            "node_type": self.__class__.__name__,
            "parameters": self.parameters,
            "inputs": {k: str(v) for k, v in inputs.items()},
        }
        return hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()


#: What a node's ``execute`` receives: the call's ``corral.Context``.
ExecutionContext = _Context


# ---------------------------------------------------------------- finding and adapting


_PLUGIN_METHODS = ("initialize", "shutdown", "create_node")


def find_plugin_class(module: ModuleType) -> type | None:
    """The seed-002 plugin class the entry defines: a ``BasePlugin``
    subclass, or a class with initialize/shutdown/create_node. Several are
    an error unless one derives from all the others."""
    found = []
    for value in vars(module).values():
        if not isinstance(value, type) or value is BasePlugin:
            continue
        if getattr(value, "__module__", None) != module.__name__:
            continue
        if issubclass(value, BasePlugin) or all(
                callable(getattr(value, m, None)) for m in _PLUGIN_METHODS):
            found.append(value)
    leaves = [c for c in found if not any(o is not c and issubclass(o, c) for o in found)]
    if len(leaves) > 1:
        names = ", ".join(sorted(c.__name__ for c in leaves))
        die(EX_CONFIG, f"{module.__name__} defines several plugin classes ({names}); keep one")
    return leaves[0] if leaves else None


def load_manifest(entry: str) -> PluginManifest:
    """The package's ``plugin.yaml`` (found beside the entry or in a folder
    above it), or a manifest with the names the supervisor set."""
    from . import miniyaml

    fallback_name = (os.environ.get("CORRAL_PLUGIN_NAME") or os.environ.get("CORRAL_PLUGIN")
                     or os.path.splitext(os.path.basename(entry))[0])
    fallback_version = os.environ.get("CORRAL_PLUGIN_VERSION") or "0.0.0"
    directory = os.path.dirname(os.path.abspath(entry))
    while True:
        path = os.path.join(directory, "plugin.yaml")
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as f:
                    data = miniyaml.loads(f.read())
                if not isinstance(data, dict):
                    raise ValueError("it is not a mapping of keys")
            except (OSError, ValueError) as e:
                # corrald has read this file with a full YAML parser before
                # starting the plugin; what this small reader cannot follow
                # costs the plugin its manifest details, not its start.
                sys.stderr.write(f"corral: {path}: {e}; self.manifest has the name and "
                                 "version only\n")
                break
            return PluginManifest.from_dict(data, fallback_name, fallback_version)
        if os.path.isfile(os.path.join(directory, "plugin.toml")):
            break  # the package root, which has no plugin.yaml
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return PluginManifest(fallback_name, fallback_version)


def to_json(value: Any) -> Any:
    """Dataclasses (node specifications) as plain JSON values."""
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


class Adapter:
    """Serves one instance of a seed-002 plugin class as a corral Plugin."""

    def __init__(self, cls: type, entry: str) -> None:
        self.manifest = load_manifest(entry)
        self.instance: Any = cls(self.manifest)
        self.plugin = Plugin(self.manifest.name, self.manifest.version)
        self.plugin.on_init(self.initialize)
        self.plugin.on_shutdown(self.instance.shutdown)
        self.plugin.add_method("get_node_types", self.get_node_types)
        self.plugin.add_method("execute", self.execute)
        for node_type in self.manifest.node_types:
            self._add_node_type(str(node_type))

    def initialize(self, config: Any) -> None:
        from . import __version__

        limits = self.plugin.limits
        memory_mib = limits.memory_bytes // (1 << 20) if limits is not None else 0
        self.instance.initialize(PluginContext(
            engine_version=__version__,
            available_resources=ResourcePool(1.0, memory_mib),
            config=config if isinstance(config, dict) else {}))
        for spec in self._specs():
            node_type = getattr(spec, "node_type", None)
            if isinstance(node_type, str) and node_type not in self.plugin.handlers:
                self._add_node_type(node_type)

    def _specs(self) -> list[Any]:
        specs = self.instance.get_node_types() if hasattr(self.instance, "get_node_types") else []
        return list(specs or [])

    def _add_node_type(self, node_type: str) -> None:
        if node_type in self.plugin.handlers:
            return

        def run(ctx: Context, input: Any) -> Any:
            return self.run_node(ctx, node_type, input)

        self.plugin.add_method(node_type, run)

    def get_node_types(self, input: Any) -> Any:
        return to_json(self._specs())

    def execute(self, ctx: Context, input: Any) -> Any:
        if not isinstance(input, dict) or not isinstance(input.get("node_type"), str):
            raise PluginError(errors.INVALID_INPUT,
                              'execute takes {"node_type": ..., "inputs": {...}, '
                              '"parameters": {...}}')
        rest = {k: v for k, v in input.items() if k != "node_type"}
        return self.run_node(ctx, input["node_type"], rest)

    def run_node(self, ctx: Context, node_type: str, input: Any) -> Any:
        if input is None:
            input = {}
        shape = '{"inputs": {...}, "parameters": {...}}'
        if not isinstance(input, dict):
            raise PluginError(errors.INVALID_INPUT, f"node `{node_type}` takes {shape}")
        unknown = sorted(set(input) - {"inputs", "parameters", "node_id"})
        if unknown:
            raise PluginError(errors.INVALID_INPUT,
                              f"node `{node_type}` takes {shape}; unknown key `{unknown[0]}`")
        inputs = input.get("inputs") or {}
        parameters = input.get("parameters") or {}
        if not isinstance(inputs, dict) or not isinstance(parameters, dict):
            raise PluginError(errors.INVALID_INPUT,
                              f"`inputs` and `parameters` of node `{node_type}` are objects")
        node = self.instance.create_node(node_type, parameters)
        if "node_id" in input:
            node.node_id = input["node_id"]
        validate = getattr(node, "validate_inputs", None)
        if validate is not None and not validate(inputs):
            raise PluginError(errors.INVALID_INPUT,
                              f"{type(node).__name__}.validate_inputs rejected the inputs")
        try:
            result = node.execute(inputs, ctx)
            if hasattr(result, "__await__"):
                import asyncio

                result = asyncio.run(_await(result))
        except PluginError:
            raise
        except Exception as e:  # noqa: BLE001 - the node's own fallback first
            fallback = node.on_error(e, ctx) if hasattr(node, "on_error") else None
            if fallback is None:
                raise
            return to_json(fallback)
        return to_json(result)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def adapt(cls: type, entry: str) -> Plugin:
    """A corral Plugin serving an instance of seed-002 plugin class ``cls``."""
    return Adapter(cls, entry).plugin
