"""Errors carry their evidence, read well, and survive pickling (xdist crosses processes)."""

from __future__ import annotations

import pickle

import pytest
import requests
from docker.errors import APIError

from envkit import runtime
from envkit.errors import (
    BaseImageError,
    BuildError,
    ConfigError,
    DaemonError,
    DockerUnavailable,
    EnvkitError,
    StateError,
)


@pytest.mark.parametrize(
    ("error", "builtin", "words"),
    [
        (
            ConfigError("/p/envkit.toml", "images.a.args", "must be a table", "write args = {}"),
            ValueError,
            ["/p/envkit.toml: images.a.args: must be a table", "fix: write args = {}"],
        ),
        (DockerUnavailable("connection refused"), ConnectionError, ["connection refused", "DOCKER_HOST"]),
        (
            StateError("/ro/.envkit/x", "Read-only file system"),
            OSError,
            ["/ro/.envkit/x", "ENVKIT_STATE_DIR"],
        ),
        (DaemonError("500 Server Error"), RuntimeError, ["failed a request: 500 Server Error", "fix:"]),
        (BaseImageError("api", "alpine:3", "not present"), LookupError, ["'api'", "alpine:3", "fix:"]),
        (
            BuildError("api", "exit code 3", ["Step 2/2 : RUN false"]),
            RuntimeError,
            ["'api' failed to build: exit code 3", "| Step 2/2 : RUN false"],
        ),
    ],
)
def test_error_message_type_and_pickling(error: EnvkitError, builtin: type, words: list[str]) -> None:
    assert isinstance(error, EnvkitError) and isinstance(error, builtin)
    for word in words:
        assert word in str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__


@pytest.mark.parametrize(
    "raised", [APIError("500 Server Error: boom"), requests.exceptions.ConnectionError("reset by peer")]
)
def test_daemon_errors_become_one_envkit_error(raised: Exception) -> None:
    with pytest.raises(DaemonError) as caught, runtime.daemon_errors():
        raise raised
    assert str(raised).splitlines()[0] in str(caught.value)
