"""Loading a plugin's entry file and finding what to serve in it: a
``corral.Plugin`` the module made, or else a seed-002 plugin class (served
through ``corral.pipeline``). Any failure here happens before Hello: it is
printed on stderr and the process exits non-zero, which the supervisor
reports as a failed start."""

from __future__ import annotations

import os
import sys

from .channel import EX_CONFIG, die
from .plugin import Plugin, _created

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import NoReturn

#: sysexits.h EX_NOINPUT: the entry file is missing.
EX_NOINPUT = 66
#: sysexits.h EX_SOFTWARE: the entry raised while being imported.
EX_SOFTWARE = 70


try:
    # importlib.util's functions, from the import system's own frozen
    # modules (always loaded): importing importlib.util costs a little of
    # every start.
    from _frozen_importlib import module_from_spec as _module_from_spec
    from _frozen_importlib_external import spec_from_file_location as _spec_from_file_location
except ImportError:  # pragma: no cover - another Python implementation
    from importlib.util import module_from_spec as _module_from_spec
    from importlib.util import spec_from_file_location as _spec_from_file_location


def load_module(path: str) -> ModuleType:
    """Imports ``path`` as a module named after its file, with its
    directory on ``sys.path`` (for its own imports)."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        die(EX_NOINPUT, f"the entry {path} does not exist or is not a file")
    directory = os.path.dirname(path)
    if directory not in sys.path:
        sys.path.insert(1, directory)
    name = os.path.splitext(os.path.basename(path))[0] or "plugin"
    if not name.isidentifier():
        name = "corral_entry"
    spec = _spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        die(EX_CONFIG, f"{path} cannot be imported as Python (name it *.py)")
    module = _module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - reported, then the start fails
        from .session import _print_exception

        _print_exception(e, f"importing the entry {path} failed")
        die(EX_SOFTWARE)
    return module


def find_plugin(module: ModuleType, entry: str) -> Plugin:
    """The ``corral.Plugin`` to serve: the module's own (``plugin`` when it
    has several), else one adapted from a seed-002 plugin class."""
    ours = [v for v in vars(module).values() if isinstance(v, Plugin)]
    unique = list({id(p): p for p in ours}.values())
    if len(unique) == 1:
        return unique[0]
    if len(unique) > 1:
        named = getattr(module, "plugin", None)
        if isinstance(named, Plugin):
            return named
        die(EX_CONFIG, f"{entry} defines several corral.Plugin objects; name the one to "
                       "serve `plugin`")
    if len(_created) == 1:  # made in a module the entry imported
        return _created[0]
    from . import pipeline

    cls = pipeline.find_plugin_class(module)
    if cls is not None:
        return pipeline.adapt(cls, entry)
    die(EX_CONFIG, f"{entry} defines no corral.Plugin (plugin = corral.Plugin(name, version)) "
                   "and no plugin class with initialize/shutdown/create_node "
                   "(seed 002's shape, corral.pipeline.BasePlugin)")


def run(entry: str) -> NoReturn:
    """Imports ``entry`` and serves its plugin: what the bootstrap does."""
    from . import logbridge  # noqa: F401 - imported before the plugin runs
    from .session import serve

    module = load_module(entry)
    serve(find_plugin(module, entry))
