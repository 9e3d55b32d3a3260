"""An ``ssh://`` engine: Docker 26.1 in a container of this machine's engine (the matrix's image,
started as tests/engines/run.py starts it, with sshd on for a key made here), reached with
``DOCKER_HOST=ssh://root@<its IP>`` through the system's ssh, as ``docker -H ssh://`` reaches it.

The client's ssh is pointed at the test's key and known_hosts by an ``ssh`` first on PATH that
adds ``-F <config in tmp>``: the user's ~/.ssh is never read or written. Each test's stack is
removed from the inner engine at the end (the test fails if anything was left); the engine's
container, labelled like the matrix's and named ``envkit-engines-classic-ek4-*``, goes when the
module ends, also when a test failed.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import psutil
import pytest
from conftest import Project

from envkit.docker.labels import STACK
from integration.engine_containers import WEB, classic_engine, json_of
from integration.stack_fixtures import StackProject, make_stack_project

pytestmark = pytest.mark.docker


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ek4", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


@dataclasses.dataclass(frozen=True)
class SshEngine:
    name: str  # its container on this machine's engine
    ip: str
    client: docker.APIClient  # docker-py over tcp, for the tests' own looks
    home: Path  # the client's ssh material: key, config, known_hosts, bin/ssh

    @property
    def docker_host(self) -> str:
        return f"ssh://root@{self.ip}"

    def env(self, key: str = "key") -> dict[str, str]:
        """What a client process needs: DOCKER_HOST, and PATH with the ssh that uses ``key``."""
        import os

        return {
            "DOCKER_HOST": self.docker_host,
            "PATH": f"{self.home / 'bin' / key}{os.pathsep}{os.environ['PATH']}",
        }


def client_ssh(home: Path, key: str) -> None:
    """``home/bin/<key>/ssh``: the system's ssh with a config that uses ``home/<key>`` only."""
    real = shutil.which("ssh")
    if real is None:
        pytest.fail("the ssh tier needs OpenSSH's client: apt-get install openssh-client", pytrace=False)
    config = home / f"{key}.config"
    config.write_text(
        "Host *\n"
        f"  IdentityFile {home / key}\n"
        "  IdentitiesOnly yes\n"
        "  IdentityAgent none\n"
        "  StrictHostKeyChecking no\n"
        f"  UserKnownHostsFile {home / 'known_hosts'}\n"
        "  LogLevel ERROR\n"
    )
    wrapper = home / "bin" / key / "ssh"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(f'#!/bin/sh\nexec {real} -F {config} "$@"\n')
    wrapper.chmod(0o755)


@pytest.fixture(scope="module")
def ssh_engine(
    docker_client: docker.APIClient, busybox_base: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SshEngine]:
    home = tmp_path_factory.mktemp("ssh")
    public = keygen(home / "key")
    keygen(home / "stranger")  # a key the engine does not know
    for key in ("key", "stranger"):
        client_ssh(home, key)
    with classic_engine(
        docker_client, busybox_base, "ek4", env=(f"ENVKIT_ENGINE_SSH_KEY={public}",)
    ) as engine:
        yield SshEngine(engine.name, engine.ip, engine.client, home)


@pytest.fixture
def ssh_project(project: Project, ssh_engine: SshEngine) -> Iterator[StackProject]:
    """A one-service stack (busybox httpd) whose leftovers are looked for on the ssh engine."""
    with make_stack_project(project, ssh_engine.client) as sp:
        sp.write_stack(WEB)
        yield sp


def ssh_processes(engine: SshEngine) -> list[psutil.Process]:
    """The client's ssh processes to the engine (none may outlive an envkit command)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "dial-stdio" in cmd and engine.ip in cmd:
            found.append(proc)
    return found


def test_builds_over_ssh_assembled_and_classic(ssh_project: StackProject, ssh_engine: SshEngine) -> None:
    sp, engine = ssh_project, ssh_engine
    sp.project.write("images/ran/Dockerfile", "FROM bb\nRUN echo ran-over-ssh > /ran\n")
    sp.write_stack(WEB + "\n[images.ran]\n")
    built = {entry["image"]: entry for entry in json_of(sp.cli("build", "--json", **engine.env()))}
    assert built["bb"]["builder"] == "assembler", built
    assert built["ran"]["builder"] == "classic", built
    for entry in built.values():  # the images are on the engine behind ssh, not on this machine
        assert engine.client.inspect_image(entry["tag"])["Id"]
    output = engine.client.create_container(built["ran"]["tag"], ["cat", "/ran"], labels={STACK: sp.stack_id})
    try:
        engine.client.start(output)
        engine.client.wait(output, timeout=30)
        assert engine.client.logs(output).decode().strip() == "ran-over-ssh"
    finally:
        engine.client.remove_container(output, force=True)
    again = json_of(sp.cli("build", "--json", **engine.env()))
    assert {e["image"]: e["status"] for e in again} == {"bb": "cached", "ran": "cached"}, again
    assert not ssh_processes(engine)


def test_up_status_down_over_ssh(ssh_project: StackProject, ssh_engine: SshEngine) -> None:
    sp, engine = ssh_project, ssh_engine
    started = time.monotonic()
    up = json_of(sp.cli("up", "--json", **engine.env()))
    took = time.monotonic() - started
    address = up["endpoints"]["web"]["8000"]
    host, port = address.rsplit(":", 1)
    assert host == engine.ip  # ssh://root@IP: the service host is IP
    assert up["env"] == {"ENVKIT_WEB_HOST": engine.ip, "ENVKIT_WEB_PORT_8000": port}
    (container,) = sp.containers()
    with urllib.request.urlopen(f"http://{address}/hostname", timeout=10) as answer:
        assert answer.read().decode().strip() == container["Id"][:12]

    status = json_of(sp.cli("status", "--json", **engine.env()))
    assert status["engine"]["host"] == engine.docker_host
    assert (status["host"], status["host_source"]) == (engine.ip, "the engine's address (DOCKER_HOST)")
    assert status["services"]["web"]["endpoints"] == {"8000": address}
    assert status["services"]["web"]["status"] == "healthy"
    text = sp.cli("status", **engine.env()).stdout
    assert f"engine: {engine.docker_host} (from DOCKER_HOST)" in text

    assert json_of(sp.cli("down", "--json", **engine.env()))["stopped"]
    sp.wait_until(sp.gone, 30, "the stack gone from the ssh engine")
    assert took < 60, f"up took {took:.1f}s"
    sp.wait_until(lambda: not ssh_processes(engine), 10, "no ssh process left to the engine")


def test_a_refused_key_is_one_error_naming_docker_host(
    ssh_project: StackProject, ssh_engine: SshEngine
) -> None:
    sp, engine = ssh_project, ssh_engine
    started = time.monotonic()
    done = sp.cli("status", timeout=60, **engine.env("stranger"))
    assert time.monotonic() - started < 30
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert f"ssh to root@{engine.ip} refused the login" in done.stderr, done.stderr
    assert "Permission denied" in done.stderr
    assert "chosen by DOCKER_HOST" in done.stderr
    assert f"`ssh root@{engine.ip} docker version` must work without a question" in done.stderr
    assert not ssh_processes(engine)


def test_an_ssh_port_nobody_listens_on_is_one_error(ssh_project: StackProject, ssh_engine: SshEngine) -> None:
    sp, engine = ssh_project, ssh_engine
    env = {**engine.env(), "DOCKER_HOST": f"ssh://root@{engine.ip}:2"}
    done = sp.cli("up", timeout=60, **env)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert f"ssh to root@{engine.ip} could not connect" in done.stderr, done.stderr
    assert "check the address in DOCKER_HOST" in done.stderr
    assert not sp.containers()


SICK = """
[services.sick]
image = "bb"
command = ["sh", "-c", "echo sick-over-ssh; exec sleep 300"]
healthcheck = { cmd = ["false"] }
start_timeout = 3
"""


def test_an_unhealthy_service_shows_its_log_read_over_ssh(
    ssh_project: StackProject, ssh_engine: SshEngine
) -> None:
    sp, engine = ssh_project, ssh_engine
    sp.write_stack(SICK)
    done = sp.cli("up", timeout=120, **engine.env())
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert "sick" in done.stderr and "| sick-over-ssh" in done.stderr, done.stderr
    sp.wait_until(sp.gone, 30, "the failed stack gone from the ssh engine")
    sp.wait_until(lambda: not ssh_processes(engine), 10, "no ssh process left to the engine")
