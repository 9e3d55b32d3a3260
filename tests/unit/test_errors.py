"""Errors carry their evidence, read well, and survive pickling (xdist crosses processes)."""

from __future__ import annotations

import pickle

import pytest

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
    StateCorrupt,
    StateDirUnsafe,
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
        (
            StateCorrupt("/p/.envkit/state.json", "it is a directory, not a file", "remove that directory"),
            OSError,
            ["/p/.envkit/state.json is corrupt: it is a directory", "fix: remove that directory"],
        ),
        (
            StateDirUnsafe("/tmp/shared", "every user may write to it (mode 0777)"),
            OSError,
            [
                "refusing the state directory /tmp/shared: every user may write",
                "chmod 700",
                "ENVKIT_STATE_DIR",
            ],
        ),
        (DaemonError("500 Server Error"), RuntimeError, ["failed a request: 500 Server Error", "fix:"]),
        (BaseImageError("api", "alpine:3", "not present"), LookupError, ["'api'", "alpine:3", "fix:"]),
        (
            ImageMissing(["base", "api"], "no earlier build of this image is recorded here"),
            LookupError,
            ["images base, api are not built", "building is turned off", "--envkit-no-build"],
        ),
        (
            BuildError("api", "exit code 3", ["Step 2/2 : RUN false"]),
            RuntimeError,
            ["'api' failed to build: exit code 3", "| Step 2/2 : RUN false"],
        ),
        (
            ServiceUnhealthy(
                "db", "TCP port 5432", 12.25, "not healthy within 10s", ["starting", "FATAL: bad config"]
            ),
            RuntimeError,
            [
                "service 'db' did not become healthy: not healthy within 10s",
                "check: TCP port 5432",
                "waited 12.2s",
                "| starting\n  | FATAL: bad config",
                "start_timeout",
            ],
        ),
        (
            ServiceUnhealthy("api", "HTTP GET /health on port 8000", 0.0, "its container stopped"),
            RuntimeError,
            ["service 'api'", "HTTP GET /health on port 8000", "its log is empty"],
        ),
        (
            LockTimeout("/p/.envkit/lock", 120.0, "pid 4242 (python -m pytest, since 30s ago)"),
            TimeoutError,
            ["waited 120s", "/p/.envkit/lock", "held by pid 4242 (python -m pytest", "ENVKIT_LOCK_TIMEOUT"],
        ),
        (
            StackConflict(
                "demo-1234abcd",
                ["service 'db' changed (image postgres:17; running: postgres:16)"],
                ["pid 17 on box (python -m pytest, holding for 5s)", "a pin from `envkit up`"],
            ),
            RuntimeError,
            [
                "stack 'demo-1234abcd' is running with other inputs",
                "- service 'db' changed (image postgres:17; running: postgres:16)",
                "- pid 17 on box",
                "- a pin from `envkit up`",
                "envkit down --all",
            ],
        ),
        (
            EndpointError("db", 5433, "db:5432, web:8000"),
            LookupError,
            ["service 'db' port 5433 is not published", "published: db:5432, web:8000", "fix:"],
        ),
        (
            EndpointError("redis", None, "none"),
            LookupError,
            ["service 'redis' is not published by this stack (published: none)"],
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


def test_base_image_error_fix_fits_the_failure() -> None:
    failed_pull = str(
        BaseImageError("api", "python:3-alpine", "pulling it failed: no such host", pull_failed=True)
    )
    assert "docker pull python:3-alpine" in failed_pull
    assert "--pull missing" not in failed_pull  # it was pulled, and that failed
    missing = str(
        BaseImageError("api", "python:3-alpine", "not present locally, and the pull policy is 'never'")
    )
    assert "--pull missing" in missing
    assert "docker pull" not in missing
