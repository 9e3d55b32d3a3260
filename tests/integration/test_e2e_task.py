"""`envkit e2e` on a small project: build, stack, pytest -n, teardown, pass-through, summary line."""

from __future__ import annotations

import collections
import re
import time

import pytest

from envkit.docker import labels
from integration import events
from integration.stack_fixtures import StackProject

pytestmark = pytest.mark.docker

TESTS = """
import urllib.request

import pytest

pytestmark = pytest.mark.services("web")


def test_web_answers(envkit_stack):
    url = envkit_stack.url("web", 8000) + "/hostname"
    assert urllib.request.urlopen(url, timeout=10).status == 200


def test_other(envkit_stack):
    assert envkit_stack.endpoint("web", 8000)[1] > 0


def test_fails_when_asked(envkit_stack):
    import os

    assert os.environ.get("E2E_FAIL") != "1"
"""

SUMMARY = re.compile(
    r"envkit e2e: images: (\d+) built, (\d+) cached in [\d.]+s; stack (\S+): (attached|\d+ started) "
    r"in [\d.]+s; tests: ([^;]+) in [\d.]+s \(exit (\d+)\); stack ([^;]+); total [\d.]+s"
)


def _summary(stdout: str) -> re.Match[str]:
    found = SUMMARY.search(stdout)
    assert found, f"no summary line in:\n{stdout}"
    return found


def _creates(sp: StackProject, since: float) -> collections.Counter[str]:
    creates = events.log().between(since, action="create", label=sp.label)
    return collections.Counter(e["Actor"]["Attributes"].get(labels.SERVICE) for e in creates)


def test_e2e_runs_the_tests_on_one_stack_and_stops_it(stack_project: StackProject) -> None:
    sp = stack_project
    sp.write_stack()
    sp.project.write("e2e/test_web.py", TESTS)
    since = time.time()
    run = sp.cli("e2e", "--path", "e2e", "--workers", "2", "--", "-k", "not fails_when_asked")
    assert run.returncode == 0, run.stdout + run.stderr
    summary = _summary(run.stdout)
    assert summary.group(1) == "1"  # bb was built
    assert summary.group(3) == sp.stack_id
    assert summary.group(4) == "2 started"  # e2e starts every service before pytest
    assert summary.group(5) == "2 passed"  # -k after `--` reached pytest: 2 of the 3 tests ran
    assert summary.group(7) == "stopped"
    assert sp.gone(), "envkit e2e left containers or a network"
    assert _creates(sp, since) == {"web": 1, "echo": 1}


def test_e2e_with_ttl_leaves_the_stack_warm_and_the_next_run_attaches(stack_project: StackProject) -> None:
    sp = stack_project
    sp.write_stack()
    sp.project.write("e2e/test_web.py", TESTS)
    first = sp.cli("e2e", "--path", "e2e", "--workers", "1", "--ttl", "60")
    assert first.returncode == 0, first.stdout + first.stderr
    assert _summary(first.stdout).group(7) == "kept up for 60s"
    assert not sp.gone()
    since = time.time()
    second = sp.cli("e2e", "--path", "e2e", "--workers", "1", "--ttl", "60", "--", "-q")
    assert second.returncode == 0, second.stdout + second.stderr
    summary = _summary(second.stdout)
    assert (summary.group(1), summary.group(4), summary.group(5)) == ("0", "attached", "3 passed")
    assert _creates(sp, since) == {}
    down = sp.cli("down")
    assert down.returncode == 0, down.stderr
    sp.wait_until(sp.gone, 15, "the stack is gone after envkit down")


def test_e2e_exit_code_is_pytests_and_the_stack_still_goes(stack_project: StackProject) -> None:
    sp = stack_project
    sp.write_stack()
    sp.project.write("e2e/test_web.py", TESTS)
    run = sp.cli("e2e", "--path", "e2e", "--workers", "2", E2E_FAIL="1")
    assert run.returncode == 1, run.stdout + run.stderr
    summary = _summary(run.stdout)
    assert (summary.group(5), summary.group(6)) == ("2 passed, 1 failed", "1")
    assert "envkit: web log" in run.stdout  # the failing test's report carries the service's log
    assert sp.gone()


def test_e2e_reports_an_unhealthy_service_once_and_leaves_nothing(stack_project: StackProject) -> None:
    sp = stack_project
    sp.write_stack(
        """
[services.web]
image = "bb"
ports = [8000]
command = ["sh", "-c", "echo web-cannot-start-marker; exit 3"]
healthcheck = { http = "/", port = 8000 }
"""
    )
    sp.project.write("e2e/test_web.py", TESTS)
    run = sp.cli("e2e", "--path", "e2e")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "envkit: error: service 'web' did not become healthy" in run.stderr
    assert run.stderr.count("web-cannot-start-marker") == 1
    assert "Traceback" not in run.stderr
    assert sp.gone()
