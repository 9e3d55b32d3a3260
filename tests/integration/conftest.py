"""Fixtures for every integration test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from conftest import Project

from integration import events
from integration.registry import registry  # noqa: F401 (the session's registry, for the cache tests)
from integration.stack_fixtures import StackProject, make_stack_project


@pytest.fixture(scope="session", autouse=True)
def _docker_events() -> Iterator[None]:
    """The daemon's events, read live for this process's whole session (integration/events.py)."""
    events.start()
    yield
    events.stop()


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ENVKIT_* from the caller; build locks in a private cache (also for the CLI it runs)."""
    for name in list(os.environ):
        if name.startswith("ENVKIT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture
def stack_project(project: Project, docker_client: docker.APIClient) -> Iterator[StackProject]:
    """A project with services (``web``, and ``echo`` depending on it) on a busybox image.

    Everything its stack creates is removed at the end, and the test fails if anything was left.
    """
    with make_stack_project(project, docker_client) as sp:
        yield sp
