"""What an acquire restarts, and what it adopts.

- A holder that dies while starting a service: the joiner that was waiting for
  it takes the start over and adopts the container already running (no second
  container is created).
- A kept stack whose container has stopped, or turned unhealthy by its image's
  own HEALTHCHECK, gets a new container on the next acquire (when nobody else
  holds the stack); the other services are left as they are.
- A ``cmd`` health check runs in the container until it exits 0; one that
  never does is a ServiceUnhealthy whose reason carries the command's output.
"""

from __future__ import annotations

import json
import time

import pytest

import envkit
from envkit.stack.state import STATE_FILE
from integration.stack_fixtures import StackProject, read_line, release

pytestmark = pytest.mark.docker

SLOW_WEB = """
[services.web]
image = "bb"
ports = [8000]
command = ["sh", "-c", "sleep 4; exec httpd -f -p 8000 -h /etc"]
healthcheck = { http = "/hostname", port = 8000 }
start_timeout = 30
"""


def test_a_waiter_takes_over_the_start_of_a_starter_that_died(stack_project: StackProject) -> None:
    sp = stack_project
    sp.write_stack(SLOW_WEB)
    starter = sp.holder()
    # Wait until the starter has started web's container and recorded it (it then waits for the
    # health check, which SLOW_WEB delays), then start a joiner and kill the starter. A starter
    # killed before it records its container leaves a stray, which the joiner rightly removes.
    sp.wait_until(lambda: recorded_container(sp, "web") is not None, 60, "web's container is recorded")
    first_id = recorded_container(sp, "web")
    assert [c["Id"] for c in sp.containers()] == [first_id]
    joiner = sp.holder()
    time.sleep(0.5)  # the joiner registers and waits for the starter
    assert starter.poll() is None, "the starter finished before it could be killed"
    starter.kill()
    starter.communicate(timeout=30)

    line = read_line(joiner, timeout=60)
    assert "error" not in line, line
    assert set(line["ports"]) == {"web"}
    containers = sp.containers()
    assert [c["Id"] for c in containers] == [first_id], "the joiner did not adopt the running container"

    code, err = release(joiner)
    assert code == 0, err
    sp.wait_until(sp.gone, 15, "the stack goes once the joiner leaves")


def recorded_container(sp: StackProject, service: str) -> str | None:
    """The container id the stack's state file records for ``service`` (None before it does)."""
    try:
        state = json.loads((sp.state_dir / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return (state.get("services", {}).get(service) or {}).get("container")


# web: the image's own HEALTHCHECK, which fails once /tmp/bad exists.
CHECKED = """
[services.web]
image = "checked"
ports = [8000]
command = ["httpd", "-f", "-p", "8000", "-h", "/etc"]

[services.echo]
image = "bb"
ports = [9000]
command = ["nc", "-ll", "-p", "9000", "-e", "cat"]
healthcheck = { tcp = 9000 }
"""


def ids(sp: StackProject) -> dict[str, str]:
    return {c["Labels"]["envkit.service"]: c["Id"] for c in sp.containers() if c["State"] == "running"}


@pytest.mark.parametrize("damage", ["stopped", "unhealthy"])
def test_a_broken_service_of_a_kept_stack_is_restarted_by_the_next_acquire(
    stack_project: StackProject, damage: str
) -> None:
    sp = stack_project
    sp.project.write(
        "images/checked/Dockerfile",
        f"FROM {sp.project.base}\nHEALTHCHECK --interval=1s --timeout=2s CMD test ! -f /tmp/bad\n",
    )
    sp.write_stack(CHECKED, extra_images="[images.checked]\n")
    first = sp.holder("--keep")
    read_line(first)
    code, err = release(first)
    assert code == 0, err
    before = ids(sp)
    assert set(before) == {"web", "echo"}

    if damage == "stopped":
        sp.client.kill(before["web"])
    else:
        exec_id = sp.client.exec_create(before["web"], ["touch", "/tmp/bad"])
        sp.client.exec_start(exec_id)
        sp.wait_until(
            lambda: "(unhealthy)" in sp.client.containers(filters={"id": before["web"]})[0]["Status"],
            30,
            "Docker calls web unhealthy",
        )

    second = sp.holder()
    line = read_line(second)
    assert "error" not in line, line
    after = ids(sp)
    assert after["web"] != before["web"], "the broken web container was not replaced"
    assert after["echo"] == before["echo"], "a healthy service was restarted"
    assert before["web"] not in {c["Id"] for c in sp.containers()}, "the broken container was left behind"
    code, err = release(second)
    assert code == 0, err
    assert sp.cli("down").returncode == 0
    sp.wait_until(sp.gone, 15, "envkit down removes the kept stack")


READY_FILE = """
[services.worker]
image = "bb"
command = ["sh", "-c", "sleep 1; touch /tmp/ready; exec sleep 600"]
healthcheck = { cmd = ["test", "-f", "/tmp/ready"] }
start_timeout = 20

[services.never]
image = "bb"
command = ["sleep", "600"]
healthcheck = { cmd = ["sh", "-c", "echo not yet; exit 1"] }
start_timeout = 2
"""


def test_a_cmd_check_runs_in_the_container_until_it_exits_0(
    stack_project: StackProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    sp = stack_project
    sp.write_stack(READY_FILE)
    monkeypatch.setenv("ENVKIT_ROOT", str(sp.root))
    monkeypatch.setenv("ENVKIT_GRACE", str(sp.grace))
    started = time.monotonic()
    with envkit.shared_stack(services=["worker"]) as handle:
        # healthy only once the file exists, a second after the start
        assert time.monotonic() - started >= 1.0
        assert handle.ports == {"worker": {}}
    with pytest.raises(envkit.ServiceUnhealthy) as caught:
        envkit.acquire(services=["never"])
    assert caught.value.service == "never"
    assert "exit code 1: not yet" in caught.value.reason
    sp.wait_until(sp.gone, 15, "the stack goes")
