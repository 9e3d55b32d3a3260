"""A real remote engine: Docker 26.1 running in a container of this machine's engine (the matrix's
image, started as tests/engines/run.py starts it), reached over tcp, the way CI's docker:dind or a
team's build host is used. Its published ports are on the container's interfaces: from here they
are reached at the container's IP address, never at 127.0.0.1.

Each test's stack is removed from the inner engine at the end (and the test fails if anything was
left); the engine's container, labelled like the matrix's, is removed when the module ends, also
when a test failed.
"""

from __future__ import annotations

import contextlib
import http.server
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest
from conftest import Project

from integration.engine_containers import WEB, classic_engine, json_of
from integration.stack_fixtures import StackProject, make_stack_project

pytestmark = pytest.mark.docker

WARNING = "the engine, not this machine, resolves 127.0.0.1"


@dataclass(frozen=True)
class RemoteEngine:
    name: str  # its container on this machine's engine
    ip: str  # the container's address on this machine's bridge: the engine's host, seen from here
    forwarded: int  # this machine's 127.0.0.1 port that forwards to its API (run.py's --publish)
    client: docker.APIClient  # docker-py on tcp://ip:2375, for the tests' own looks

    @property
    def docker_host(self) -> str:
        return f"tcp://{self.ip}:2375"


@pytest.fixture(scope="module")
def remote_engine(docker_client: docker.APIClient, busybox_base: str) -> Iterator[RemoteEngine]:
    with classic_engine(docker_client, busybox_base, "ek20") as engine:
        info = docker_client.inspect_container(engine.name)
        forwarded = int(info["NetworkSettings"]["Ports"]["2375/tcp"][0]["HostPort"])
        yield RemoteEngine(engine.name, engine.ip, forwarded, engine.client)


@pytest.fixture
def remote_project(project: Project, remote_engine: RemoteEngine) -> Iterator[StackProject]:
    """A one-service stack (busybox httpd) whose leftovers are looked for on the remote engine."""
    with make_stack_project(project, remote_engine.client) as sp:
        sp.write_stack(WEB)
        yield sp


def published(sp: StackProject, service: str, port: int) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The service's container's port bindings: as asked (HostConfig), as the engine made them."""
    (container,) = [c for c in sp.containers() if c["Labels"].get("envkit.service") == service]
    info = sp.client.inspect_container(container["Id"])
    key = f"{port}/tcp"
    return info["HostConfig"]["PortBindings"][key], info["NetworkSettings"]["Ports"][key]


def hostname(url: str) -> str:
    with urllib.request.urlopen(f"{url}/hostname", timeout=10) as response:
        return response.read().decode().strip()


def test_up_status_down_against_a_remote_engine_derive_the_host_from_docker_host(
    remote_project: StackProject, remote_engine: RemoteEngine
) -> None:
    sp, engine = remote_project, remote_engine
    env = {"DOCKER_HOST": engine.docker_host}
    up = json_of(sp.cli("up", "--json", **env))
    address = up["endpoints"]["web"]["8000"]
    host, port = address.rsplit(":", 1)
    assert host == engine.ip
    assert up["env"] == {"ENVKIT_WEB_HOST": engine.ip, "ENVKIT_WEB_PORT_8000": port}
    asked, made = published(sp, "web", 8000)
    assert [b["HostIp"] for b in asked] == ["0.0.0.0"]  # every interface of the engine's host
    assert made[0]["HostPort"] == port
    (container,) = sp.containers()
    assert hostname(f"http://{address}") == container["Id"][:12]  # the service itself answers there

    status = json_of(sp.cli("status", "--json", **env))
    assert (status["host"], status["publish"]) == (engine.ip, "0.0.0.0")
    assert status["host_source"] == "the engine's address (DOCKER_HOST)"
    assert status["services"]["web"]["endpoints"] == {"8000": address}
    assert status["services"]["web"]["status"] == "healthy"
    assert status["engine"]["host"] == engine.docker_host  # the fields it had stay

    text = sp.cli("status", **env).stdout
    assert f"service host: {engine.ip} (from the engine's address (DOCKER_HOST))" in text
    assert "ports published on: 0.0.0.0 (from a remote engine" in text

    down = json_of(sp.cli("down", "--json", **env))
    assert down["stopped"]
    sp.wait_until(sp.gone, 30, "the stack gone from the remote engine")


def test_envkit_host_set_reaches_an_engine_whose_api_is_forwarded_to_loopback(
    remote_project: StackProject, remote_engine: RemoteEngine
) -> None:
    """DOCKER_HOST=tcp://127.0.0.1:N forwards to the engine's container (run.py's --publish): that
    looks local to envkit (the derived host would be 127.0.0.1, which reaches nothing of the
    engine's ports: the README says so); ENVKIT_HOST set is where the ports are reached."""
    sp, engine = remote_project, remote_engine
    forwarded = {"DOCKER_HOST": f"tcp://127.0.0.1:{engine.forwarded}"}
    up = json_of(sp.cli("up", "--json", ENVKIT_HOST=engine.ip, **forwarded))
    address = up["endpoints"]["web"]["8000"]
    assert address.startswith(f"{engine.ip}:")
    assert [b["HostIp"] for b in published(sp, "web", 8000)[0]] == ["0.0.0.0"]
    assert hostname(f"http://{address}")
    status = json_of(sp.cli("status", "--json", ENVKIT_HOST=engine.ip, **forwarded))
    assert (status["host"], status["host_source"], status["publish"]) == (engine.ip, "ENVKIT_HOST", "0.0.0.0")
    assert status["services"]["web"]["endpoints"] == {"8000": address}
    assert json_of(sp.cli("down", "--json", ENVKIT_HOST=engine.ip, **forwarded))["stopped"]
    sp.wait_until(sp.gone, 30, "the stack gone from the remote engine")


class _Decoy(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.asked += 1  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"decoy\n")

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def decoy_on(port: int) -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Decoy)
    server.asked = 0  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_decoy_on_this_machines_loopback_is_not_the_remote_service(
    remote_project: StackProject, remote_engine: RemoteEngine
) -> None:
    """The issue's decoy: a listener on this machine's 127.0.0.1 at the port number the remote
    engine published, and ENVKIT_HOST=127.0.0.1. Before, envkit said `web: healthy`; now the
    decoy's answers never count and the error names ENVKIT_HOST."""
    sp, engine = remote_project, remote_engine
    env = sp.env(DOCKER_HOST=engine.docker_host, ENVKIT_HOST="127.0.0.1")
    up = subprocess.Popen(
        [sys.executable, "-m", "envkit", "up"],
        cwd=sp.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sp.procs.append(up)
    port = 0

    def engine_published() -> bool:
        nonlocal port
        for c in sp.containers():
            bindings = c.get("Ports") or []
            port = next((int(b["PublicPort"]) for b in bindings if b.get("PublicPort")), 0)
        return port > 0 or up.poll() is not None

    sp.wait_until(engine_published, 60, "the remote engine to publish web's port")
    assert port, up.communicate(timeout=30)
    with decoy_on(port) as decoy:
        _, err = up.communicate(timeout=60)
        assert decoy.asked > 0  # type: ignore[attr-defined]  # the probes did reach the decoy
    assert up.returncode != 0, err
    assert "healthy in" not in err
    assert f"a listener at 127.0.0.1:{port} answered" in err, err
    assert f"the engine at {engine.docker_host} is on another machine" in err
    assert "set ENVKIT_HOST" in err and "raise its start_timeout" not in err
    sp.wait_until(sp.gone, 30, "the failed stack gone from the remote engine")


def test_a_loopback_cache_with_a_remote_engine_is_one_warning(
    remote_project: StackProject, remote_engine: RemoteEngine
) -> None:
    sp, engine = remote_project, remote_engine
    cache = {"ENVKIT_CACHE": "127.0.0.1:5999/ek20"}
    done = sp.cli("build", DOCKER_HOST=engine.docker_host, **cache)
    assert done.returncode == 0, done.stderr  # the cache never fails a build
    assert done.stderr.count(WARNING) == 1, done.stderr
    assert "127.0.0.1:5999/ek20 (from ENVKIT_CACHE)" in done.stderr
    up = sp.cli("up", DOCKER_HOST=engine.docker_host, **cache)  # one process: build and acquire, once
    assert up.returncode == 0, up.stderr
    assert up.stderr.count(WARNING) == 1, up.stderr
    assert sp.cli("down", DOCKER_HOST=engine.docker_host).returncode == 0
    local = sp.cli("build", **cache)  # this machine's engine: its loopback is this one's
    assert WARNING not in local.stderr


def test_a_local_engine_still_publishes_on_127_0_0_1_only(
    project: Project, docker_client: docker.APIClient
) -> None:
    with make_stack_project(project, docker_client) as sp:
        sp.write_stack(WEB)
        up = json_of(sp.cli("up", "--json"))
        address = up["endpoints"]["web"]["8000"]
        assert address.startswith("127.0.0.1:")
        asked, made = published(sp, "web", 8000)
        assert [b["HostIp"] for b in asked] == ["127.0.0.1"]
        assert [b["HostIp"] for b in made] == ["127.0.0.1"]
        status = json_of(sp.cli("status", "--json"))
        assert (status["host"], status["publish"]) == ("127.0.0.1", "127.0.0.1")
        assert json_of(sp.cli("down", "--json"))["stopped"]
        deadline = time.monotonic() + 30
        while not sp.gone() and time.monotonic() < deadline:
            time.sleep(0.2)


PLUGIN_TEST = """
import os
import urllib.request

import pytest

pytestmark = pytest.mark.services("web")


@pytest.mark.parametrize("i", range(4))
def test_web(envkit_stack, i):
    host, port = envkit_stack.endpoint("web", 8000)
    assert host == os.environ["EXPECT_HOST"]
    assert envkit_stack.env() == {"ENVKIT_WEB_HOST": host, "ENVKIT_WEB_PORT_8000": str(port)}
    with urllib.request.urlopen(envkit_stack.url("web", 8000) + "/hostname", timeout=10) as answer:
        assert answer.status == 200
"""


def test_the_plugin_under_xdist_gives_every_worker_the_remote_engines_address(
    remote_project: StackProject, remote_engine: RemoteEngine
) -> None:
    sp, engine = remote_project, remote_engine
    (sp.root / "tests").mkdir()
    (sp.root / "tests" / "test_remote_web.py").write_text(PLUGIN_TEST)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "-q", "tests"],
        cwd=sp.root,
        env=sp.env(DOCKER_HOST=engine.docker_host, EXPECT_HOST=engine.ip),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "4 passed" in done.stdout
    sp.wait_until(sp.gone, 30, "the stack gone from the remote engine after the session")
