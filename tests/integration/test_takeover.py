"""A holder that dies while starting a service: a waiting holder takes the start over.

The starter is SIGKILLed while its service is still on its way to healthy; the
joiner that was waiting for it adopts the container already running (no second
container is created) and returns once the service is healthy.
"""

from __future__ import annotations

import time

import pytest

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
    # Wait until the starter has created the container, then start a joiner and kill the starter.
    sp.wait_until(lambda: len(sp.containers()) == 1, 60, "the starter creates web's container")
    first_id = sp.containers()[0]["Id"]
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
