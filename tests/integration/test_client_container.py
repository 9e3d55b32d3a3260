"""A client in a container of the engine it talks to (envkit.reach), against this machine's engine.

The devcontainer: a sibling container on this machine's engine with the engine's socket mounted
(Docker-outside-of-Docker), running envkit from this checkout. The checkout and the Python the
venv was made from are mounted read-only at their own paths, as tests/engines/run.py mounts them;
the project (its state directory) read-write at its own path, so the stack id is the one this
process computes. Its image is the engine matrix's Debian image (the libraries that Python needs),
run with ``sleep infinity``, not as an engine. It joins the stack's network and reaches the
services by their containers' names at the container ports; `envkit down` disconnects it and
removes the network, and the container itself is left as it was. Every container here carries
envkit's labels and is removed at the end, also when a test failed.

The other side, a client beside the engine inside the engine's own container (docker:dind, the
engine matrix): :func:`test_a_client_beside_the_engine_uses_the_published_ports` runs in the
matrix as one of its tiers and asserts ``ports`` there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import Project

from integration.engine_containers import WEB
from integration.stack_fixtures import StackProject, make_stack_project

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"
IN_MATRIX = bool(os.environ.get("ENVKIT_TEST_ENGINE"))  # tests/engines/run.py: beside its engine
SOCKET = "/var/run/docker.sock"
PLUGIN_TEST = """
import urllib.request

import pytest

pytestmark = pytest.mark.services("web")


@pytest.mark.parametrize("i", range(4))
def test_web(envkit_stack, i):
    url = envkit_stack.url("web", 8000)
    assert url == "http://" + envkit_stack.stack + "-web:8000"
    with urllib.request.urlopen(url + "/hostname", timeout=10) as answer:
        assert answer.status == 200
"""


def _engine_image() -> str:
    """The engine matrix's Docker image (tests/engines: built by envkit, a no-op when current)."""
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "envkit"), "build", "--quiet", "--json", "--image", "docker"],
        cwd=ROOT / "tests" / "engines",
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if done.returncode != 0:
        pytest.fail(f"the engine image could not be built:\n{done.stderr[-2000:]}", pytrace=False)
    (entry,) = [e for e in json.loads(done.stdout) if e["image"] == "docker"]
    return str(entry["tag"])


@dataclass(frozen=True)
class DevContainer:
    """A sibling container on this machine's engine, running envkit from this checkout."""

    id: str
    name: str
    sp: StackProject

    def run(self, *argv: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess[str]:
        """``argv`` in the container, in the project, with the Python of this checkout's venv."""
        environ = {
            "ENVKIT_ROOT": str(self.sp.root),
            "ENVKIT_GRACE": "0",
            "ENVKIT_WARDEN": "0",  # not what these tests test (tests/integration/test_warden.py does)
            "XDG_CACHE_HOME": "/tmp/xdg",
            "PYTHONDONTWRITEBYTECODE": "1",
            **env,
        }
        command = ["docker", "exec", "--workdir", str(self.sp.root)]
        command += [f"--env={k}={v}" for k, v in environ.items()]
        return subprocess.run(
            [*command, self.id, *argv], capture_output=True, text=True, check=False, timeout=timeout
        )

    def envkit(self, *args: str, **env: str) -> Any:
        done = self.run(str(PYTHON), "-m", "envkit", *args, **env)
        assert done.returncode == 0, (
            f"envkit {' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
        return json.loads(done.stdout) if "--json" in args else done.stdout


@pytest.fixture
def web_project(project: Project, docker_client: docker.APIClient) -> Iterator[StackProject]:
    with make_stack_project(project, docker_client) as sp:
        sp.write_stack(WEB)
        yield sp


@pytest.fixture
def dev(web_project: StackProject, docker_client: docker.APIClient) -> Iterator[DevContainer]:
    """The devcontainer; removed at the end (before the stack's leftovers are looked for, so a
    failed test's stack network has no endpoint of it left)."""
    if IN_MATRIX:
        pytest.skip("the devcontainer runs on this machine's engine, not inside the matrix's")
    image = _engine_image()
    name = f"ek3-dev-{uuid.uuid4().hex[:8]}"
    python = Path(sys.base_prefix)
    root = web_project.root
    subprocess.run(
        ["docker", "run", "--detach", "--name", name,
         "--label", "envkit.project=ek3-dev", "--label", f"envkit.stack={name}",
         "--entrypoint", "sleep",
         f"--volume={SOCKET}:{SOCKET}",
         f"--volume={ROOT}:{ROOT}:ro", f"--volume={python}:{python}:ro", f"--volume={root}:{root}",
         image, "infinity"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    try:
        yield DevContainer(docker_client.inspect_container(name)["Id"], name, web_project)
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True, check=False, timeout=120)


def _networks(client: docker.APIClient, cid: str) -> set[str]:
    return set(client.inspect_container(cid)["NetworkSettings"]["Networks"])


def test_a_devcontainer_joins_the_stack_network_and_reaches_the_services_by_name(
    dev: DevContainer, docker_client: docker.APIClient
) -> None:
    sp = dev.sp
    stack = sp.stack_id
    before = _networks(docker_client, dev.id)
    assert stack not in before

    up = dev.envkit("up", "--json")
    assert up["endpoints"] == {"web": {"8000": f"{stack}-web:8000"}}
    assert up["env"] == {"ENVKIT_WEB_HOST": f"{stack}-web", "ENVKIT_WEB_PORT_8000": "8000"}
    assert _networks(docker_client, dev.id) == before | {stack}

    status = dev.envkit("status", "--json")
    assert status["reach"] == "network"
    assert status["client_container"] == {"id": dev.id, "name": dev.name}
    assert status["reach_source"] == f"this process runs in the container {dev.name} of the engine"
    assert status["services"]["web"] == {**status["services"]["web"], "status": "healthy"}
    assert status["services"]["web"]["endpoints"] == {"8000": f"{stack}-web:8000"}
    assert status["network_clients"] == [dev.name]
    text = dev.envkit("status")
    assert f"reached: over the stack's network, from the container {dev.name}" in text

    (web,) = sp.containers()
    fetch = (
        "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"
    )
    answer = dev.run(str(PYTHON), "-c", fetch, f"http://{stack}-web:8000/hostname")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == web["Id"][:12]  # the service itself answered, over the network

    # the port is still published, on the engine's host's loopback, for clients there
    binding = docker_client.inspect_container(web["Id"])["NetworkSettings"]["Ports"]["8000/tcp"][0]
    assert binding["HostIp"] == "127.0.0.1"
    with urllib.request.urlopen(f"http://127.0.0.1:{binding['HostPort']}/hostname", timeout=10) as r:
        assert r.read().decode().strip() == web["Id"][:12]

    down = dev.envkit("down", "--json")
    assert down["stopped"] and down["containers_removed"] == 1
    assert sp.gone()  # containers, volumes and the network: it had no endpoint of the devcontainer left
    after = docker_client.inspect_container(dev.id)
    assert after["State"]["Running"] and set(after["NetworkSettings"]["Networks"]) == before


def test_envkit_reach_ports_keeps_a_devcontainer_off_the_network(
    dev: DevContainer, docker_client: docker.APIClient
) -> None:
    """ENVKIT_REACH=ports: the published ports at 127.0.0.1, which from a sibling container are
    its own loopback, not the engine host's: the health check cannot reach the service."""
    done = dev.run(str(PYTHON), "-m", "envkit", "up", ENVKIT_REACH="ports")
    assert done.returncode != 0
    assert "not healthy" in done.stderr and "web" in done.stderr
    assert dev.sp.stack_id not in _networks(docker_client, dev.id)
    assert dev.sp.gone()  # a failed start leaves nothing


def test_a_devcontainer_can_go_through_the_gateway_instead(
    dev: DevContainer, docker_client: docker.APIClient
) -> None:
    """The README's other way: the ports published on the bridge's gateway, and reached there."""
    gateway = docker_client.inspect_container(dev.id)["NetworkSettings"]["Gateway"]
    via = {"ENVKIT_REACH": "ports", "ENVKIT_PUBLISH": gateway, "ENVKIT_HOST": gateway}
    up = dev.envkit("up", "--json", **via)
    host, port = up["endpoints"]["web"]["8000"].rsplit(":", 1)
    assert host == gateway
    assert dev.envkit("status", "--json", **via)["reach"] == "ports"
    assert dev.sp.stack_id not in _networks(docker_client, dev.id)
    fetch = "import urllib.request as u,sys; print(u.urlopen(sys.argv[1], timeout=10).read().decode())"
    answer = dev.run(str(PYTHON), "-c", fetch, f"http://{gateway}:{port}/hostname")
    assert answer.returncode == 0, answer.stderr
    assert dev.envkit("down", "--json", **via)["stopped"]
    assert dev.sp.gone()


def test_the_plugin_under_xdist_in_a_devcontainer(dev: DevContainer, docker_client: docker.APIClient) -> None:
    sp = dev.sp
    (sp.root / "tests").mkdir()
    (sp.root / "tests" / "test_web.py").write_text(PLUGIN_TEST)
    done = dev.run(str(PYTHON), "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "-q", "tests")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "4 passed" in done.stdout
    sp.wait_until(sp.gone, 30, "the stack (its network too) gone after the session")
    assert docker_client.inspect_container(dev.id)["State"]["Running"]


def test_a_client_beside_the_engine_uses_the_published_ports(stack_project: StackProject) -> None:
    """This process and the engine share a machine: here (this machine's engine, which knows no
    container of ours) and in the engine matrix, where the tiers run inside the engine's own
    container, talking to that engine (docker:dind's case): the engine does not know the
    container, so the ports on 127.0.0.1 are reached, as every stack tier there does."""
    status = json.loads(stack_project.cli("status", "--json").stdout)
    assert status["reach"] == "ports" and status["client_container"] is None
    if IN_MATRIX:  # the files name the engine container's ID, which its inner engine does not know
        assert "does not know" in status["reach_source"], status["reach_source"]
