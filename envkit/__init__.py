"""envkit: reproducible, fast, parallel end-to-end test environments on Docker.

The public API, each name imported on first use (a CLI call imports only
what its command runs)::

    envkit.load()                     # the stack file -> StackConfig
    envkit.ensure(config, envkit.Daemon())   # build what changed -> [ImageResult]
    with envkit.shared_stack(services=["api"]) as stack: ...
    envkit.acquire(...)               # the same, as a Lease to .release()
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from envkit.config.find import load
    from envkit.config.model import StackConfig
    from envkit.docker.engine import Daemon
    from envkit.errors import (
        BaseImageError,
        BuildError,
        ConfigError,
        DaemonError,
        DockerUnavailable,
        EndpointError,
        EnvkitError,
        ImageMissing,
        LockTimeout,
        PushError,
        ServiceUnhealthy,
        StackConflict,
        StackStopped,
        StateError,
    )
    from envkit.images.build import ImageResult, ensure
    from envkit.images.gc import gc
    from envkit.stack.handle import StackHandle
    from envkit.stack.stack import Lease, acquire, shared_stack

__version__ = "0.1.0"

_WHERE = {
    "load": "envkit.config.find",
    "StackConfig": "envkit.config.model",
    "Daemon": "envkit.docker.engine",
    "ImageResult": "envkit.images.build",
    "ensure": "envkit.images.build",
    "gc": "envkit.images.gc",
    "StackHandle": "envkit.stack.handle",
    "Lease": "envkit.stack.stack",
    "acquire": "envkit.stack.stack",
    "shared_stack": "envkit.stack.stack",
    **dict.fromkeys(
        (
            "BaseImageError",
            "BuildError",
            "ConfigError",
            "DaemonError",
            "DockerUnavailable",
            "EndpointError",
            "EnvkitError",
            "ImageMissing",
            "LockTimeout",
            "PushError",
            "ServiceUnhealthy",
            "StackConflict",
            "StackStopped",
            "StateError",
        ),
        "envkit.errors",
    ),
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'envkit' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "BaseImageError",
    "BuildError",
    "ConfigError",
    "Daemon",
    "DaemonError",
    "DockerUnavailable",
    "EndpointError",
    "EnvkitError",
    "ImageMissing",
    "ImageResult",
    "Lease",
    "LockTimeout",
    "PushError",
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
