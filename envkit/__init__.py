"""envkit: reproducible, fast, parallel end-to-end test environments on Docker."""

from __future__ import annotations

from envkit.build import ImageResult, ensure, gc
from envkit.config import StackConfig, load
from envkit.errors import (
    BaseImageError,
    BuildError,
    ConfigError,
    DaemonError,
    DockerUnavailable,
    EndpointError,
    EnvkitError,
    LockTimeout,
    ServiceUnhealthy,
    StackConflict,
    StateError,
)
from envkit.runtime import Daemon
from envkit.stack import Lease, StackHandle, StackStopped, acquire, shared_stack

__version__ = "0.1.0"

__all__ = [
    "BaseImageError",
    "BuildError",
    "ConfigError",
    "Daemon",
    "DaemonError",
    "DockerUnavailable",
    "EndpointError",
    "EnvkitError",
    "ImageResult",
    "Lease",
    "LockTimeout",
    "ServiceUnhealthy",
    "StackConfig",
    "StackConflict",
    "StackHandle",
    "StackStopped",
    "StateError",
    "__version__",
    "acquire",
    "ensure",
    "gc",
    "load",
    "shared_stack",
]
