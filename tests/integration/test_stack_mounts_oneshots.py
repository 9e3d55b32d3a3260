"""What compose stacks need of the runtime, on the real daemon: one-shot services and depends_on
conditions, the stack's named volumes, bind mounts (a missing source folder is created), tmpfs,
network aliases, entrypoint, working_dir, labels, and a turned-off image health check.

The stack is the ``stack_project``'s busybox image with its services replaced by specs made
here, as a compose file would make them (the compose loader has tests of its own).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import docker
import pytest

from envkit.config.find import load
from envkit.config.model import COMPLETED, STARTED, HealthCheck, Mount, ServiceSpec, StackConfig
from envkit.docker.engine import Daemon
from envkit.errors import ServiceUnhealthy
from envkit.progress import Silent
from envkit.settings import Settings
from envkit.stack.stack import Stack
from integration.stack_fixtures import StackProject

pytestmark = pytest.mark.docker


def service(name: str, command: list[str], **more: object) -> ServiceSpec:
    fields: dict[str, object] = {
        "name": name,
        "image": "bb",
        "ports": (),
        "environment": {},
        "command": tuple(command),
        "depends_on": (),
        "healthcheck": HealthCheck("none"),
        "start_timeout": 30.0,
    }
    fields.update(more)
    return ServiceSpec(**fields)  # type: ignore[arg-type]


def stack_of(sp: StackProject, services: list[ServiceSpec], volumes: tuple[str, ...] = ()) -> StackConfig:
    sp.write_stack(services="")
    config = load(sp.root, sp.env())
    return dataclasses.replace(config, services={s.name: s for s in services}, volumes=volumes)


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("ENVKIT_GRACE", "0")
    return Settings.from_env()


def test_one_shot_gates_its_dependent_volumes_binds_tmpfs_aliases_and_all_go_at_teardown(
    stack_project: StackProject, docker_client: docker.APIClient, settings: Settings, tmp_path: Path
) -> None:
    shared = tmp_path / "shared" / "not-yet"  # a bind source that does not exist yet
    init = service(
        "init",
        ["sh", "-c", "echo migrated > /data/marker && sleep 0.5"],
        mounts=(Mount("volume", "/data", "data"),),
    )
    app = service(
        "app",
        ["cat /data/marker > /shared/seen && pwd > /shared/pwd && touch /scratch/x && exec sleep 3600"],
        entrypoint=("sh", "-c"),
        working_dir="/data",
        depends_on=("init",),
        conditions={"init": COMPLETED},
        mounts=(
            Mount("volume", "/data", "data", read_only=True),
            Mount("bind", "/shared", str(shared)),
            Mount("tmpfs", "/scratch"),
        ),
        aliases=("web", "frontend"),
        labels={"org.example.team": "core"},
        healthcheck=HealthCheck("cmd", cmd=("test", "-f", "/shared/seen")),
    )
    side = service(
        "side",
        ["sleep", "3600"],
        depends_on=("app",),
        conditions={"app": STARTED},
        stop_signal="SIGKILL",
    )
    config = stack_of(stack_project, [init, app, side], volumes=("data",))
    stack = Stack(config, Daemon(), Silent(), settings=settings)
    held = stack.acquire(None)
    try:
        by_service = {c["Labels"]["envkit.service"]: c for c in stack_project.containers()}
        assert set(by_service) == {"init", "app", "side"}
        init_info = docker_client.inspect_container(by_service["init"]["Id"])
        assert init_info["State"]["Status"] == "exited" and init_info["State"]["ExitCode"] == 0
        # the one-shot ran before its dependent started
        assert (
            init_info["State"]["FinishedAt"]
            < docker_client.inspect_container(by_service["app"]["Id"])["State"]["StartedAt"]
        )
        assert (shared / "seen").read_text() == "migrated\n"  # the volume's content, through the bind
        assert (shared / "pwd").read_text() == "/data\n"
        app_info = docker_client.inspect_container(by_service["app"]["Id"])
        assert app_info["Config"]["Labels"]["org.example.team"] == "core"
        mounts = {m["Destination"]: m for m in app_info["Mounts"]}
        assert mounts["/data"]["Type"] == "volume" and mounts["/data"]["RW"] is False
        assert mounts["/shared"]["Type"] == "bind"
        assert app_info["HostConfig"]["Mounts"][2]["Type"] == "tmpfs"
        assert docker_client.inspect_container(by_service["side"]["Id"])["Config"]["StopSignal"] == "SIGKILL"
        [volume] = stack_project.volumes()
        assert volume["Name"] == f"{config.id}_data" and volume["Labels"]["envkit.stack"] == config.id
        # every name of app resolves on the stack's network
        for alias in ("app", "web", "frontend"):
            run = docker_client.exec_create(by_service["side"]["Id"], ["ping", "-c", "1", "-W", "2", alias])
            docker_client.exec_start(run["Id"])
            assert docker_client.exec_inspect(run["Id"])["ExitCode"] == 0, alias

        # a second holder attaches: the one-shot is not run again
        second = stack.acquire(None)
        again = {c["Labels"]["envkit.service"]: c["Id"] for c in stack_project.containers()}
        assert again == {name: c["Id"] for name, c in by_service.items()}
        second.release()
    finally:
        held.release()
    stack_project.wait_until(stack_project.gone, 30, "containers, network and the volume removed")


def test_a_one_shot_that_fails_is_a_clear_error_with_its_log_and_its_dependent_never_starts(
    stack_project: StackProject, settings: Settings
) -> None:
    init = service("init", ["sh", "-c", "echo migration 42 failed: no such table >&2; exit 3"])
    app = service("app", ["sleep", "3600"], depends_on=("init",), conditions={"init": COMPLETED})
    stack = Stack(stack_of(stack_project, [init, app]), Daemon(), Silent(), settings=settings)
    with pytest.raises(ServiceUnhealthy) as caught:
        stack.acquire(None)
    err = caught.value
    assert err.service == "init"
    assert "exited with code 3" in err.reason
    assert any("migration 42 failed" in line for line in err.logs)
    assert "app" not in {c["Labels"]["envkit.service"] for c in stack_project.containers()}
    stack_project.wait_until(stack_project.gone, 30, "the failed stack removed")
