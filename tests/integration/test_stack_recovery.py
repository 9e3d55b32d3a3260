"""The shared stack when things go wrong, with real processes and the real daemon.

A lost or corrupt state file is rebuilt from container labels; a service that
never gets healthy (or exits at once) is a ServiceUnhealthy carrying its logs
and leaves nothing running; a dead daemon is a DockerUnavailable within 2 s;
two checkouts with the same stack name keep to their own stacks; changed
inputs under a live holder are a StackConflict naming it; a state lock held
too long is a LockTimeout naming its owner; and ``envkit up``/``down``/
``status`` do what they say, including on bad input.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import Project

import envkit
from envkit.docker import labels
from integration import events
from integration.stack_fixtures import (
    DEFAULT_SERVICES,
    StackProject,
    make_stack_project,
    read_line,
    release,
)

pytestmark = pytest.mark.docker

DEAD_SOCKET = "unix:///nonexistent.sock"

# Holds the stack's state lock until its stdin closes: python -c LOCKER STATE_DIR
LOCKER = """
import sys
from pathlib import Path
from envkit.stack.lease import state_lock
with state_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


# --- helpers ------------------------------------------------------------------------------------


def running_ids(sp: StackProject) -> dict[str, str]:
    """Service -> id of its running container, for this stack only."""
    out = {}
    for c in sp.containers():
        assert c["State"] == "running", f"a container of the stack is {c['State']}: {c['Names']}"
        service = c["Labels"][labels.SERVICE]
        assert service not in out, f"two containers for service {service!r}"
        out[service] = c["Id"]
    return out


def creates_since(sp: StackProject, since: float) -> list[str]:
    """Ids of the containers of this stack created since ``since`` (docker events)."""
    creates = events.log().between(since, action="create", label=sp.label)
    return [e["id"] for e in creates if e["Actor"]["Attributes"].get(labels.STACK) == sp.stack_id]


def holder_files(sp: StackProject) -> list[str]:
    directory = sp.state_dir / "holders"
    return sorted(p.name for p in directory.glob("*.json")) if directory.is_dir() else []


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status)


def echo(port: int) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"ping\n")
        return sock.recv(16)


def assert_nothing_left(sp: StackProject) -> None:
    assert sp.gone(), f"left behind: {sp.containers()} {sp.networks()}"
    assert holder_files(sp) == []


def cli_json(sp: StackProject, *args: str) -> Any:
    proc = sp.cli(*args, "--json")
    assert proc.returncode == 0, f"envkit {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)


# --- 6: a lost or corrupt state file ------------------------------------------------------------


@pytest.mark.parametrize("damage", ["corrupt", "deleted"])
def test_a_lost_state_file_is_rebuilt_from_labels(stack_project: StackProject, damage: str) -> None:
    """A new holder attaches to the running containers, warns about the state file, and nothing leaks."""
    sp = stack_project
    since = time.time() - 1
    first = sp.holder()
    second = None
    try:
        line = read_line(first)
        assert "error" not in line, line
        before = running_ids(sp)
        assert sorted(before) == ["echo", "web"]

        state_file = sp.state_dir / "state.json"
        assert state_file.is_file()
        if damage == "corrupt":
            state_file.write_text("{ this is not json \x00")
        else:
            state_file.unlink()

        second = sp.holder()
        joined = read_line(second)
        assert "error" not in joined, joined
        assert joined["stack"] == line["stack"]
        assert joined["ports"] == line["ports"]
        assert running_ids(sp) == before  # attached to the same containers
        assert sorted(creates_since(sp, since)) == sorted(before.values())  # one create per service
        assert get(f"http://127.0.0.1:{joined['ports']['web']['8000']}/hostname") == 200
        assert json.loads(state_file.read_text())["stack"] == sp.stack_id  # the file is whole again

        code, err = release(second)
        assert code == 0, err
        assert str(state_file) in err and "rebuilt it from the labels" in err, err
        assert sp.containers(), "the stack went while the first holder still held it"
        code, err = release(first)
        assert code == 0, err
        assert "state file" not in err  # the first holder never saw a broken file
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
    sp.wait_until(sp.gone, 10, "the stack is removed after both holders left")
    assert holder_files(sp) == []


# --- 7: a service that never gets healthy -------------------------------------------------------

NEVER_HEALTHY = """
[services.web]
image = "bb"
ports = [8000]
command = ["sh", "-c", "echo web-starting; exec httpd -f -v -p 8000 -h /etc"]
healthcheck = { http = "/no-such-page", port = 8000 }
start_timeout = 3

[services.ok]
image = "bb"
ports = [9000]
command = ["nc", "-ll", "-p", "9000", "-e", "cat"]
healthcheck = { tcp = 9000 }
"""

EXITS_AT_ONCE = """
[services.web]
image = "bb"
ports = [8000]
command = ["sh", "-c", "echo boom; exit 3"]
healthcheck = { http = "/hostname", port = 8000 }
"""


def test_a_service_that_never_gets_healthy_is_service_unhealthy_with_its_logs(
    stack_project: StackProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process: ServiceUnhealthy names the service and check, carries the logs, within 3 s + margin."""
    sp = stack_project
    sp.write_stack(NEVER_HEALTHY)
    assert sp.cli("build").returncode == 0  # so the time below is the service's, not the build's
    monkeypatch.setenv("ENVKIT_GRACE", "1")
    started = time.monotonic()
    with pytest.raises(envkit.ServiceUnhealthy) as caught:
        envkit.acquire(sp.root)
    elapsed = time.monotonic() - started
    err = caught.value
    assert err.service == "web"
    assert "/no-such-page" in err.check and "8000" in err.check
    assert "web-starting" in err.logs
    assert "404" in err.reason
    assert 3 <= elapsed < 3 + 4, f"raised after {elapsed:.1f}s for a start_timeout of 3s"
    # The healthy service started beside it goes too: no container, no network, no holder.
    assert_nothing_left(sp)


def test_a_service_whose_container_exits_at_once_fails_quickly(stack_project: StackProject) -> None:
    """A holder gets ServiceUnhealthy with the container's output long before the 60 s default timeout."""
    sp = stack_project
    sp.write_stack(EXITS_AT_ONCE)
    assert sp.cli("build").returncode == 0
    started = time.monotonic()
    proc = sp.holder()
    line = read_line(proc)
    elapsed = time.monotonic() - started
    assert line["error"] == "ServiceUnhealthy", line
    assert "'web'" in line["message"] and "boom" in line["message"], line["message"]
    assert "exit code 3" in line["message"], line["message"]
    assert elapsed < 15, f"took {elapsed:.1f}s"
    assert proc.wait(timeout=30) == 3
    assert_nothing_left(sp)


# --- 8: a dead daemon ---------------------------------------------------------------------------


def test_a_dead_docker_host_is_docker_unavailable_within_two_seconds(
    stack_project: StackProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    sp = stack_project
    monkeypatch.setenv("DOCKER_HOST", DEAD_SOCKET)
    started = time.monotonic()
    with pytest.raises(envkit.DockerUnavailable) as caught:
        envkit.acquire(sp.root)
    assert time.monotonic() - started < 2
    assert "docker info" in str(caught.value)

    started = time.monotonic()
    proc = sp.cli("up", DOCKER_HOST=DEAD_SOCKET)
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    assert proc.stderr.count("envkit: error:") == 1, proc.stderr
    assert "envkit: error: the Docker daemon does not answer" in proc.stderr
    assert "Traceback" not in proc.stderr
    # The 2 s bound is the library's (above); the CLI adds an interpreter's start and imports,
    # which a loaded machine stretches to seconds: here the bound only tells a hang from an answer.
    assert elapsed < 15, f"envkit up took {elapsed:.1f}s to give up"
    monkeypatch.delenv("DOCKER_HOST")
    assert_nothing_left(sp)


# --- 9: two checkouts side by side --------------------------------------------------------------


def test_two_checkouts_of_one_stack_name_run_side_by_side(
    stack_project: StackProject, project: Project, docker_client: docker.APIClient, tmp_path: Path
) -> None:
    first = stack_project
    other_root = tmp_path / "second-checkout"
    other_root.mkdir()
    try:
        second_project = Project(root=other_root, stack=project.stack, base=project.base)
        with make_stack_project(second_project, docker_client) as second:
            up_first = cli_json(first, "up")
            up_second = cli_json(second, "up")
            assert up_first["stack"] == first.stack_id
            assert up_second["stack"] == second.stack_id
            assert first.stack_id != second.stack_id
            assert first.stack_id.startswith(project.stack) and second.stack_id.startswith(project.stack)

            for sp, up in ((first, up_first), (second, up_second)):
                status = cli_json(sp, "status")
                assert {name: s["status"] for name, s in status["services"].items()} == {
                    "echo": "healthy",
                    "web": "healthy",
                }
                assert get(f"http://{up['endpoints']['web']['8000']}/hostname") == 200
            firsts, seconds = running_ids(first), running_ids(second)
            assert not set(firsts.values()) & set(seconds.values())
            second_networks = [n["Id"] for n in second.networks()]

            proc = first.cli("down")
            assert proc.returncode == 0, proc.stderr
            assert first.gone()
            assert running_ids(second) == seconds
            assert [n["Id"] for n in second.networks()] == second_networks
            assert get(f"http://{up_second['endpoints']['web']['8000']}/hostname") == 200

            proc = second.cli("down")
            assert proc.returncode == 0, proc.stderr
            assert second.gone()
    finally:
        shutil.rmtree(other_root, ignore_errors=True)


# --- changed inputs under a live holder ---------------------------------------------------------


def test_changed_inputs_under_a_holder_are_a_conflict_then_a_restart(stack_project: StackProject) -> None:
    sp = stack_project
    first = sp.holder()
    try:
        line = read_line(first)
        assert "error" not in line, line
        before = {c["Labels"][labels.SERVICE]: c for c in sp.containers()}

        sp.write_stack(
            DEFAULT_SERVICES.replace(
                "ports = [8000]\n", 'ports = [8000]\nenvironment = { GREETING = "v2" }\n', 1
            )
        )
        newcomer = sp.holder()
        refused = read_line(newcomer)
        assert refused["error"] == "StackConflict", refused
        assert f"pid {first.pid}" in refused["message"], refused["message"]
        assert "'web'" in refused["message"]
        assert newcomer.wait(timeout=30) == 3
        # The holder's stack was not touched.
        assert running_ids(sp) == {name: c["Id"] for name, c in before.items()}
        assert sp.live_holders() == 1
        assert get(f"http://127.0.0.1:{line['ports']['web']['8000']}/hostname") == 200

        code, err = release(first)
        assert code == 0, err
        restarted = sp.holder()
        read = read_line(restarted)
        assert "error" not in read, read
        after = {c["Labels"][labels.SERVICE]: c for c in sp.containers()}
        assert after["web"]["Id"] != before["web"]["Id"]
        assert after["web"]["Labels"][labels.INPUTS] != before["web"]["Labels"][labels.INPUTS]
        assert "GREETING=v2" in sp.client.inspect_container(after["web"]["Id"])["Config"]["Env"]
        code, err = release(restarted)
        assert code == 0, err
    finally:
        for proc in sp.procs:
            if proc.poll() is None:
                proc.kill()
    sp.wait_until(sp.gone, 10, "the stack is removed after the last holder left")


# --- a state lock held too long -----------------------------------------------------------------


def test_a_state_lock_held_too_long_is_lock_timeout_naming_its_owner(stack_project: StackProject) -> None:
    sp = stack_project
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(sp.state_dir)],
        cwd=sp.root,
        env=sp.env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sp.procs.append(locker)  # killed by the fixture if the test fails
    try:
        assert locker.stdout is not None
        assert locker.stdout.readline().strip() == "locked"

        proc = sp.holder(ENVKIT_LOCK_TIMEOUT="1")
        line = read_line(proc)
        assert line["error"] == "LockTimeout", line
        assert f"pid {locker.pid}" in line["message"], line["message"]
        assert proc.wait(timeout=30) == 3

        cli = sp.cli("up", ENVKIT_LOCK_TIMEOUT="1")
        assert cli.returncode != 0
        assert "envkit: error: waited 1s for the stack lock" in cli.stderr, cli.stderr
        assert f"pid {locker.pid}" in cli.stderr and "Traceback" not in cli.stderr
        assert_nothing_left(sp)
    finally:
        with contextlib.suppress(Exception):
            locker.communicate(input="", timeout=10)
        if locker.poll() is None:
            locker.kill()
    assert locker.returncode == 0
    # With the lock free again, the same acquire works.
    assert sp.cli("up", ENVKIT_LOCK_TIMEOUT="1").returncode == 0
    assert sp.cli("down").returncode == 0
    assert_nothing_left(sp)


# --- the CLI ------------------------------------------------------------------------------------


def test_up_status_down(stack_project: StackProject) -> None:
    sp = stack_project
    up = cli_json(sp, "up")
    assert up["stack"] == sp.stack_id
    assert set(up["endpoints"]) == {"web", "echo"}
    assert up["env"]["ENVKIT_WEB_PORT_8000"] == up["endpoints"]["web"]["8000"].split(":")[1]

    status = cli_json(sp, "status")
    assert status["stack"] == sp.stack_id and status["running"] is True
    for name, port in (("web", "8000"), ("echo", "9000")):
        assert status["services"][name]["status"] == "healthy"
        assert status["services"][name]["endpoints"] == {port: up["endpoints"][name][port]}
        assert status["services"][name]["endpoints"][port].startswith("127.0.0.1:")
    assert [(h["kind"], h["alive"], h["expires_in"]) for h in status["holders"]] == [("pin", True, None)]
    assert get(f"http://{up['endpoints']['web']['8000']}/hostname") == 200
    assert echo(int(up["endpoints"]["echo"]["9000"].split(":")[1])) == b"ping\n"

    # The pin holds the stack with no process alive: it is still up after the grace.
    time.sleep(sp.grace + 1.5)
    assert sorted(running_ids(sp)) == ["echo", "web"]

    down = cli_json(sp, "down")
    assert down == {"stack": sp.stack_id, "stopped": True, "containers_removed": 2, "holders": []}
    assert_nothing_left(sp)
    status = cli_json(sp, "status")
    assert status["running"] is False and status["holders"] == []


def test_down_leaves_a_held_stack_up_and_down_all_stops_it(stack_project: StackProject) -> None:
    sp = stack_project
    holder = sp.holder()
    try:
        line = read_line(holder)
        assert "error" not in line, line
        ids = running_ids(sp)

        proc = sp.cli("down")
        assert proc.returncode == 0, proc.stderr
        assert "stays up" in proc.stdout and f"pid {holder.pid}" in proc.stdout, proc.stdout
        assert running_ids(sp) == ids
        assert get(f"http://127.0.0.1:{line['ports']['web']['8000']}/hostname") == 200

        proc = sp.cli("down", "--all")
        assert proc.returncode == 0, proc.stderr
        assert "stopped (2 containers removed)" in proc.stdout, proc.stdout
        assert_nothing_left(sp)

        code, err = release(holder)  # leaving a stack stopped under it is fine
        assert code == 0, err
        assert "Traceback" not in err
        assert_nothing_left(sp)
    finally:
        if holder.poll() is None:
            holder.kill()


def test_up_with_a_ttl_goes_away_by_itself(stack_project: StackProject) -> None:
    sp = stack_project
    proc = sp.cli("up", "--ttl", "2")
    assert proc.returncode == 0, proc.stderr
    assert sorted(running_ids(sp)) == ["echo", "web"]
    assert sp.reapers(), "no reaper watches the stack"
    took = sp.wait_until(sp.gone, 15, "the stack goes after its TTL of 2s")
    assert took > 0.5, "the stack went before its TTL"
    sp.wait_until(lambda: not sp.reapers(), 5, "the reaper exits once the stack is gone")
    assert holder_files(sp) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ttl", "abc"], "--ttl 'abc' is not a number of seconds"),
        (["--keep", "--ttl", "3"], "--keep and --ttl exclude each other"),
        (["--service", "nosuch"], "services.nosuch: no such service"),
    ],
)
def test_bad_up_input_is_one_clear_error_and_starts_nothing(
    stack_project: StackProject, args: list[str], message: str
) -> None:
    sp = stack_project
    proc = sp.cli("up", *args)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert proc.stderr.count("envkit: error:") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert_nothing_left(sp)
    assert not sp.reapers()


def test_up_honours_envkit_ttl_and_keep_overrides_it(stack_project: StackProject) -> None:
    """`envkit up` pins the stack; ENVKIT_TTL makes that pin lapse, and --keep pins it until
    `envkit down` whatever the environment says."""
    sp = stack_project
    assert sp.cli("up", "--json", ENVKIT_TTL="300").returncode == 0
    pins = [h for h in cli_json(sp, "status")["holders"] if h["kind"] == "pin"]
    assert len(pins) == 1 and 250 < pins[0]["expires_in"] <= 300, pins
    assert sp.cli("up", "--keep", "--json", ENVKIT_TTL="300").returncode == 0
    pins = [h for h in cli_json(sp, "status")["holders"] if h["kind"] == "pin"]
    assert len(pins) == 2 and None in [p["expires_in"] for p in pins], pins
    down = cli_json(sp, "down")
    assert down["stopped"] is True
    assert_nothing_left(sp)


def test_status_names_the_engine_the_holders_services_and_how_long_the_stack_is_up(
    stack_project: StackProject,
) -> None:
    sp = stack_project
    holder = sp.holder("--service", "web")
    try:
        read_line(holder)
        status = cli_json(sp, "status")
        assert status["engine"]["host"].startswith("unix://") and status["engine"]["source"]
        [process] = [h for h in status["holders"] if h["kind"] == "process"]
        assert process["services"] == ["web"] and process["pid"] == holder.pid
        assert 0 <= status["up_for"] < 120
        text = sp.cli("status").stdout
        assert "engine: unix://" in text and "[web]" in text
    finally:
        code, err = release(holder)
        assert code == 0, err
    sp.wait_until(sp.gone, 15, "the stack goes after the grace")


def test_a_changed_service_is_replaced_alone_the_rest_keeps_running(stack_project: StackProject) -> None:
    """The edit-to-test loop: a change to one service (here echo, on which nothing depends) replaces
    its container only; web, which echo depends on, keeps its container."""
    sp = stack_project
    sp.grace = 30.0  # the stack stays up between the two holders
    first = sp.holder()
    try:
        assert "error" not in read_line(first)
        code, err = release(first)
        assert code == 0, err
        before = running_ids(sp)
        sp.write_stack(
            DEFAULT_SERVICES.replace('command = ["nc"', 'environment = { V = "2" }\ncommand = ["nc"', 1)
        )
        second = sp.holder()
        assert "error" not in read_line(second)
        after = running_ids(sp)
        assert after["web"] == before["web"]
        assert after["echo"] != before["echo"]
        code, err = release(second)
        assert code == 0, err
    finally:
        for proc in sp.procs:
            if proc.poll() is None:
                proc.kill()
        sp.cli("down", "--all")
    sp.wait_until(sp.gone, 30, "the stack is removed")
