"""A client for corrald, corral's daemon, on its Unix socket: a blocking
``Client`` and an asyncio ``AsyncClient`` with the same operations, and
corral's error codes as exceptions.

    from corral_client import Client, Timeout

    corral = Client()                       # $CORRAL_SOCKET or /run/corral/corral.sock
    result = corral.call("hello", "greet", {"name": "Ada"})
    print(result.output)                    # {'greeting': 'Hello, Ada!'}
"""

from .aio import AsyncClient, AsyncEventStream
from .client import Client, EventStream
from .errors import (
    BY_CODE,
    AlreadyExists,
    Cancelled,
    CorralError,
    Crashed,
    DaemonUnavailable,
    DependencyMissing,
    FeatureUnavailable,
    Internal,
    InvalidConfig,
    InvalidInput,
    InvalidManifest,
    InvalidPackage,
    InvalidPolicy,
    MemoryLimitExceeded,
    NotLoaded,
    Overloaded,
    PermissionDenied,
    PidsLimitExceeded,
    PluginDied,
    PluginError,
    PluginNotFound,
    ProtocolViolation,
    Quarantined,
    SandboxSetupFailed,
    SeccompViolation,
    ShuttingDown,
    StartTimeout,
    Timeout,
    VersionInUse,
)
from .types import CallResult, Usage

__version__ = "0.1.0"

__all__ = [
    "AsyncClient", "AsyncEventStream", "Client", "EventStream", "CallResult", "Usage",
    "BY_CODE", "CorralError", "DaemonUnavailable", "PluginDied", "AlreadyExists", "Cancelled",
    "Crashed", "DependencyMissing", "FeatureUnavailable", "Internal", "InvalidConfig",
    "InvalidInput", "InvalidManifest", "InvalidPackage", "InvalidPolicy",
    "MemoryLimitExceeded", "NotLoaded", "Overloaded", "PermissionDenied", "PidsLimitExceeded",
    "PluginError", "PluginNotFound", "ProtocolViolation", "Quarantined", "SandboxSetupFailed",
    "SeccompViolation", "ShuttingDown", "StartTimeout", "Timeout", "VersionInUse",
]
