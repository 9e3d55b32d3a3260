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
    EnvkitError,
    StateError,
)
from envkit.runtime import Daemon

__version__ = "0.1.0"

__all__ = [
    "BaseImageError",
    "BuildError",
    "ConfigError",
    "Daemon",
    "DaemonError",
    "DockerUnavailable",
    "EnvkitError",
    "ImageResult",
    "StackConfig",
    "StateError",
    "__version__",
    "ensure",
    "gc",
    "load",
]
