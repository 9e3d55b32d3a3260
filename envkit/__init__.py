"""envkit: reproducible, fast, parallel end-to-end test environments on Docker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
    ImageMissing,
    LockTimeout,
    ServiceUnhealthy,
    StackConflict,
    StateError,
)
from envkit.runtime import Daemon

if TYPE_CHECKING:
    from envkit.stack import Lease, StackHandle, StackStopped, acquire, shared_stack

_STACK_NAMES = {"Lease", "StackHandle", "StackStopped", "acquire", "shared_stack"}


def __getattr__(name: str) -> Any:
    """The shared-stack API, imported on first use: `envkit build` never needs it (nor psutil)."""
    if name in _STACK_NAMES:
        from envkit import stack

        return getattr(stack, name)
    raise AttributeError(f"module 'envkit' has no attribute {name!r}")


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
    "ImageMissing",
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
