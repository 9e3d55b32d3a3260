"""The warden (envkit.stack.warden) on a real remote engine: Docker 26.1 in a container of this
machine's engine (the matrix's image, started by tests/engines/run.py's ``running``).

The client runs INSIDE a container: a sibling on this machine's engine (the engine matrix's Debian
image, ``sleep infinity``), running envkit from this checkout (the checkout and the Python of the
venv mounted read-only at their own paths, the project read-write) with DOCKER_HOST at the remote
engine. ``docker kill --signal KILL`` of that container takes envkit, its reaper and the reaper's
shadow with it; the stack on the remote engine must be gone within the warden's grace + 30 s.

The warden's image is made once per engine container, from this process (a Debian build): the
client in the container finds it there by its key. Every container here carries envkit's labels
(the engine's and the client's are named ek5-...) and is removed at the end, also on failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import Project

from integration.engine_containers import WEB, classic_engine, json_of
from integration.stack_fixtures import StackProject, make_stack_project

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"
GRACE = 5.0  # the warden's grace in these tests (ENVKIT_WARDEN_GRACE)
BOUND = GRACE + 30.0  # the goal: gone within 30 s after the grace
ROLE = "envkit.role=warden"


@dataclass(frozen=True)
class Remote:
    name: str
    ip: str
    client: docker.APIClient
    engine_tag: str  # the matrix's docker image on this machine's engine: the client container's image

    @property
    def docker_host(self) -> str:
        return f"tcp://{self.ip}:2375"


def build_warden_image(docker_host: str) -> str:
    """The warden's image on the engine at ``docker_host``, made by envkit (a no-op once there)."""
    code = (
        "from envkit.docker.engine import Daemon; from envkit.settings import Settings;"
        "from envkit.stack import warden; s = Settings.from_env();"
        "print(warden.image(Daemon(cache_dir=s.cache_dir), s))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(Path.home()), "DOCKER_HOST": docker_host},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


@pytest.fixture(scope="module")
def remote(docker_client: docker.APIClient, busybox_base: str) -> Iterator[Remote]:
    with classic_engine(docker_client, busybox_base, "ek5") as engine:
        build_warden_image(engine.docker_host)
        yield Remote(engine.name, engine.ip, engine.client, engine.tag)


@pytest.fixture
def web(project: Project, remote: Remote) -> Iterator[StackProject]:
    with make_stack_project(project, remote.client) as sp:
        sp.write_stack(WEB)
        yield sp


def wardens(sp: StackProject) -> list[dict[str, Any]]:
    return list(sp.client.containers(all=True, filters={"label": [sp.label, ROLE]}))


@dataclass(frozen=True)
class ClientBox:
    """A container on this machine's engine running envkit from this checkout, whose engine is
    the remote one."""

    name: str
    sp: StackProject
    remote: Remote

    def envkit(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        environ = {
            "ENVKIT_ROOT": str(self.sp.root),
            "ENVKIT_GRACE": "0",
            "ENVKIT_WARDEN_GRACE": f"{GRACE:g}",
            "DOCKER_HOST": self.remote.docker_host,
            "XDG_CACHE_HOME": "/tmp/xdg",
            "PYTHONDONTWRITEBYTECODE": "1",
            **env,
        }
        command = ["docker", "exec", "--workdir", str(self.sp.root)]
        command += [f"--env={k}={v}" for k, v in environ.items()]
        return subprocess.run(
            [*command, self.name, str(PYTHON), "-m", "envkit", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )


def start_client_box(sp: StackProject, remote: Remote, prefix: str = "ek5-client") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    python = Path(sys.base_prefix)
    subprocess.run(
        ["docker", "run", "--detach", "--name", name,
         "--label", "envkit.project=ek5-client", "--label", f"envkit.stack={name}",
         "--entrypoint", "sleep",
         f"--volume={ROOT}:{ROOT}:ro", f"--volume={python}:{python}:ro", f"--volume={sp.root}:{sp.root}",
         remote.engine_tag, "infinity"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return name


@pytest.fixture
def box(web: StackProject, remote: Remote) -> Iterator[ClientBox]:
    name = start_client_box(web, remote)
    try:
        yield ClientBox(name, web, remote)
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True, check=False, timeout=120)


def kill_and_time(box: ClientBox) -> float:
    """Kill the client's container (envkit, its reaper and shadow in it): the seconds until the
    stack (its containers, the warden's too, its network and volumes) is gone from the engine."""
    subprocess.run(
        ["docker", "kill", "--signal", "KILL", box.name], capture_output=True, check=True, timeout=60
    )
    killed = time.monotonic()
    while not box.sp.gone():
        if time.monotonic() - killed > BOUND + 30:
            break
        time.sleep(0.25)
    return time.monotonic() - killed


def test_a_client_killed_inside_a_container_leaves_nothing_on_the_remote_engine(box: ClientBox) -> None:
    sp = box.sp
    up = box.envkit("up", "--json")
    assert up.returncode == 0, up.stderr
    (warden,) = wardens(sp)
    assert warden["Labels"]["envkit.stack"] == sp.stack_id
    status = json.loads(box.envkit("status", "--json").stdout)
    assert status["warden"]["endpoint"].startswith(f"{box.remote.ip}:")  # published on the engine's host
    assert status["services"]["web"]["status"] == "healthy"
    assert status["reach"] == "ports"  # the remote engine does not know the client's container
    time.sleep(1.5)  # the reaper holds its lease (it looks twice a second)
    logs = sp.client.logs(warden["Id"]).decode()
    assert "lease" in logs and "opened" in logs, logs

    took = kill_and_time(box)
    assert sp.gone(), f"left on the engine {took:.1f}s after the kill: {sp.containers()}"
    assert took <= BOUND, f"the stack went {took:.1f}s after the kill: over the bound of {BOUND:.0f}s"
    assert took >= GRACE  # the warden waited out its grace (no one else removed it)


def test_envkit_down_removes_the_warden_with_the_stack(web: StackProject, remote: Remote) -> None:
    env = {"DOCKER_HOST": remote.docker_host, "ENVKIT_WARDEN": "auto"}
    up = json_of(web.cli("up", "--json", **env))
    assert up["endpoints"]["web"]
    (warden,) = wardens(web)
    assert warden["State"] == "running"
    status = json_of(web.cli("status", "--json", **env))
    assert status["warden"]["endpoint"].startswith(f"{remote.ip}:")
    assert list(status["services"]) == ["web"]  # the warden is no service
    assert "warden: on the engine" in web.cli("status", **env).stdout
    again = json_of(web.cli("up", "--json", **env))  # a second acquire keeps the one warden
    assert again["endpoints"] == up["endpoints"]
    assert [w["Id"] for w in wardens(web)] == [warden["Id"]]
    down = json_of(web.cli("down", "--json", **env))
    assert down["stopped"] and down["containers_removed"] == 1  # the services' containers
    assert web.gone()


def test_envkit_warden_0_starts_none_on_a_remote_engine(web: StackProject, remote: Remote) -> None:
    env = {"DOCKER_HOST": remote.docker_host, "ENVKIT_WARDEN": "0"}
    json_of(web.cli("up", "--json", **env))
    assert wardens(web) == []
    assert json_of(web.cli("status", "--json", **env))["warden"] is None
    json_of(web.cli("down", "--json", **env))
    assert web.gone()


def test_a_local_engine_gets_no_warden(project: Project, docker_client: docker.APIClient) -> None:
    with make_stack_project(project, docker_client) as sp:
        sp.write_stack(WEB)
        json_of(sp.cli("up", "--json", ENVKIT_WARDEN="auto"))
        assert wardens(sp) == []
        json_of(sp.cli("down", "--json"))
        assert sp.gone()
