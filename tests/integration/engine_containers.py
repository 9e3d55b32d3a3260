"""A Docker engine of the engine matrix, started as a container on this machine's engine, for
the tests that reach an engine on "another machine" (tcp, ssh, a client in a container, the
warden): tests/engines/run.py's own way to build and start it, the busybox test base loaded into
it, and the one-service stack those tests run there."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import docker
import pytest
from conftest import SESSION_STACK, import_busybox
from engine_client import docker_api_client

ROOT = Path(__file__).resolve().parents[2]

# busybox httpd, healthy once /hostname answers over HTTP
WEB = """
[services.web]
image = "bb"
ports = [8000]
command = ["httpd", "-f", "-p", "8000", "-h", "/etc"]
healthcheck = { http = "/hostname", port = 8000 }
start_timeout = 8
"""


def matrix() -> ModuleType:
    """tests/engines/run.py, the matrix's own way to build and start an engine container."""
    spec = importlib.util.spec_from_file_location("engines_run", ROOT / "tests" / "engines" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def engine_tags() -> dict[str, str]:
    """The matrix's engine images (built by envkit; a no-op once they are there)."""
    try:
        tags: dict[str, str] = matrix().build_engine_images()
    except SystemExit as err:
        pytest.fail(f"the engine image could not be built: {err}", pytrace=False)
    return tags


@dataclass(frozen=True)
class EngineContainer:
    name: str  # its container on this machine's engine
    ip: str  # the container's address on this machine's bridge: the engine's host, seen from here
    client: docker.APIClient  # docker-py on tcp://ip:2375, for the tests' own looks
    tag: str  # the matrix's docker image it runs

    @property
    def docker_host(self) -> str:
        return f"tcp://{self.ip}:2375"


@contextlib.contextmanager
def classic_engine(
    docker_client: docker.APIClient, busybox_base: str, prefix: str, env: Sequence[str] = ()
) -> Iterator[EngineContainer]:
    """Docker 26.1 (classic store) in a container named with ``prefix``, with ``env`` added to
    its engine's, the busybox base loaded (nothing is pulled there either); removed at the end."""
    run = matrix()
    tags = engine_tags()
    classic = run.ENGINES["classic"]
    engine = replace(classic, env=(*classic.env, *env))
    with run.running(engine, tags["docker"], f"{prefix}-{uuid.uuid4().hex[:8]}") as name:
        ip = docker_client.inspect_container(name)["NetworkSettings"]["IPAddress"]
        client = docker_api_client(environ={"DOCKER_HOST": f"tcp://{ip}:2375"})
        try:
            repository, tag = busybox_base.rsplit(":", 1)
            import_busybox(client, repository, tag, SESSION_STACK)
            yield EngineContainer(name, ip, client, tags["docker"])
        finally:
            client.close()


def json_of(done: subprocess.CompletedProcess[str]) -> Any:
    """A command's JSON output, once it succeeded."""
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)
