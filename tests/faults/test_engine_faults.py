"""An engine that refuses, hangs or answers garbage: one clear error, in bounded time, never a
traceback, nothing left behind. The engine is the real one behind a proxy that misbehaves on the
requests each test picks (tests/faults/proxy.py)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_client import engine_connector
from integration.stack_fixtures import StackProject

from faults.proxy import EngineProxy

pytestmark = pytest.mark.docker


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[EngineProxy]:
    if engine_connector() is None:
        pytest.skip("the engine is behind TLS or SSH: the proxy cannot forward its bytes")
    with EngineProxy(tmp_path / "engine.sock") as the_proxy:
        yield the_proxy


def run(
    sp: StackProject, proxy: EngineProxy, *args: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    proc = sp.cli(*args, DOCKER_HOST=proxy.host, timeout=120, **env)
    return proc, time.monotonic() - started


def one_clear_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stderr.count("envkit: error:") == 1, proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


def test_a_hung_engine_under_the_lock_is_an_error_within_half_the_lock_timeout(
    stack_project: StackProject, proxy: EngineProxy
) -> None:
    sp = stack_project
    assert sp.cli("build").returncode == 0  # the image, through the real engine
    proxy.on(r"^GET /containers/json", "hang")
    proc, took = run(sp, proxy, "up", ENVKIT_LOCK_TIMEOUT="6")
    one_clear_error(proc, "did not answer within 3s")
    assert took < 20, f"took {took:.1f}s"
    # Meanwhile the lock was free again: another process is not held up (nothing to wait for).
    proc, took = run(sp, proxy, "status", ENVKIT_LOCK_TIMEOUT="6")
    one_clear_error(proc, "did not answer within")
    assert sp.gone()


@pytest.mark.parametrize(
    ("dockerfile", "rule", "words"),
    [
        ("FROM {base}\nRUN true\n", r"^POST /build", ["printed nothing for 2s", "ENVKIT_BUILD_STALL"]),
        ("FROM {base}\nENV A=1\n", r"^POST /images/load", ["docker load", "within 2s"]),
        ("FROM envkit-faults/absent:1\nENV A=1\n", r"^POST /images/create", ["pulling it failed", "2s"]),
    ],
    ids=["classic-builder", "assembler-load", "base-image-pull"],
)
def test_a_build_that_hangs_is_stuck_after_the_stall_bound(
    stack_project: StackProject, proxy: EngineProxy, dockerfile: str, rule: str, words: list[str]
) -> None:
    sp = stack_project
    sp.project.write("images/bb/Dockerfile", dockerfile.replace("{base}", sp.project.base))
    proxy.on(rule, "hang")
    pull = ["--pull", "missing"] if rule.endswith("create") else []  # the test stacks never pull
    proc, took = run(sp, proxy, "build", *pull, ENVKIT_BUILD_STALL="2")
    one_clear_error(proc, *words)
    assert took < 20, f"took {took:.1f}s"


@pytest.mark.parametrize(
    ("rule", "action", "command", "words"),
    [
        (r"^GET /_ping", "refuse", "status", ["does not answer"]),
        (r"^GET /_ping", "hang", "status", ["does not answer"]),
        (r"^GET /images/[^/]+/json", "garbage", "build", ["not JSON"]),
        (r"^GET /containers/json", "shape", "status", ["not what the Engine API says"]),
        (r"^GET /containers/json", "error", "status", ["answered 500", "the engine is broken"]),
        (r"^POST /images/.*/tag", "error", "build", ["answered 500"]),
        (r"^POST /containers/create", "error", "up", ["cannot create the container", "the engine is broken"]),
        (r"^POST /networks/create", "garbage", "up", ["not JSON"]),
    ],
)
def test_an_engine_that_misbehaves_is_one_clear_error(
    stack_project: StackProject, proxy: EngineProxy, rule: str, action: str, command: str, words: list[str]
) -> None:
    sp = stack_project
    proxy.on(rule, action)
    proc, took = run(sp, proxy, command)
    one_clear_error(proc, *words)
    assert took < 30, f"took {took:.1f}s"
    sp.wait_until(sp.gone, 20, "nothing of the stack is left")
