"""The repository's demo stack (envkit.toml, images/, tests/e2e) under a real `pytest -n 4`,
and its compose twin (examples/compose: compose.yaml, and an envkit.toml naming it).

One test, against the real daemon: the demo's images build (the Debian base from its
recipe, with mmdebstrap, the first time on a machine) and a second build builds
nothing, from either definition; then `pytest -n 4 tests/e2e` passes on each with
exactly one container created per service, and nothing of its stack is left when it
exits. Each run uses a state
directory of its own, so a stack this checkout already runs is left alone; the demo
images the test built are removed at the end (images that were there before stay).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from envkit.config.find import load
from envkit.docker import labels
from integration import events

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "envkit-demo"
SERVICES = {"postgres", "redis", "auth", "api"}

pytestmark = pytest.mark.docker


def _demo_images(client: docker.APIClient) -> set[str]:
    return {
        image["Id"]
        for image in client.images(filters={"label": f"{labels.PROJECT}={PROJECT}"})
        if (image.get("Labels") or {}).get(labels.PROJECT) == PROJECT
    }


def _remove_images(client: docker.APIClient, ids: set[str]) -> None:
    """Remove these images (the demo's, built by this test), children before parents."""
    for _ in range(10):
        left = ids & _demo_images(client)
        if not left:
            return
        for image in left:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                client.remove_image(image, force=True)
    raise AssertionError(f"could not remove the demo images this test built: {sorted(left)}")


def _run_e2e(client: docker.APIClient, env: dict[str, str]) -> None:
    """``pytest -n 4 tests/e2e`` on the stack of ``env``'s ENVKIT_ROOT: it passes, each
    service's container is created once, and nothing of the stack is left when it exits."""
    sid = load(Path(env["ENVKIT_ROOT"]), env).id
    since = time.time()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "4", "tests/e2e", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    until = time.time()
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    summary = run.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary, summary
    assert int(summary.split(" passed")[0].split()[-1]) >= 12, summary

    creates = events.log().between(since, until, action="create", label=f"{labels.STACK}={sid}")
    created = collections.Counter(e["Actor"]["Attributes"].get(labels.SERVICE) for e in creates)
    assert created == dict.fromkeys(SERVICES, 1), created

    # The controller tears the stack down as its session ends: nothing is left once it exited.
    assert client.containers(all=True, filters={"label": f"{labels.STACK}={sid}"}) == []
    assert client.networks(filters={"label": f"{labels.STACK}={sid}"}) == []
    holders = Path(env["ENVKIT_STATE_DIR"]) / "holders"
    assert not holders.exists() or not any(holders.glob("*.json"))


def _remove_stack(client: docker.APIClient, sid: str) -> None:
    for c in client.containers(all=True, filters={"label": f"{labels.STACK}={sid}"}):
        client.remove_container(c["Id"], force=True, v=True)
    for n in client.networks(filters={"label": f"{labels.STACK}={sid}"}):
        client.remove_network(n["Id"])


@pytest.mark.timeout(1200)
def test_pytest_n4_on_the_demo_stack_and_its_compose_twin_starts_each_service_once_and_leaves_nothing(
    docker_client: docker.APIClient, tmp_path: Path
) -> None:
    """The demo as envkit.toml, then as examples/compose/compose.yaml (with the envkit.toml
    beside it, which adds the recipe base compose cannot describe): the same images (the twin
    builds nothing), and the same e2e suite passes against both."""
    env = {
        **os.environ,
        "ENVKIT_ROOT": str(ROOT),
        "ENVKIT_STATE_DIR": str(tmp_path / "state"),
    }
    twin = {
        **env,
        "ENVKIT_ROOT": str(ROOT / "examples" / "compose"),
        "ENVKIT_STATE_DIR": str(tmp_path / "twin"),
    }
    sids = [load(Path(e["ENVKIT_ROOT"]), e).id for e in (env, twin)]  # both load, or nothing starts
    before = _demo_images(docker_client)
    try:
        build = [sys.executable, "-m", "envkit", "build", "--json", "--quiet"]
        first = subprocess.run(build, cwd=ROOT, env=env, capture_output=True, text=True, timeout=800)
        assert first.returncode == 0, first.stderr
        assert {r["status"] for r in json.loads(first.stdout)} <= {"built", "cached"}
        for again in (env, twin):
            second = subprocess.run(build, cwd=ROOT, env=again, capture_output=True, text=True, timeout=120)
            assert second.returncode == 0, second.stderr
            statuses = {r["image"]: r["status"] for r in json.loads(second.stdout)}
            assert statuses == dict.fromkeys(["base", "postgres", "redis", "auth", "api"], "cached")

        _run_e2e(docker_client, env)
        _run_e2e(docker_client, twin)
    finally:
        for sid in sids:
            with contextlib.suppress(docker.errors.APIError):
                _remove_stack(docker_client, sid)
        _remove_images(docker_client, _demo_images(docker_client) - before)


def test_the_alpine_variant_loads_and_fails_clearly_where_nothing_can_be_pulled(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ENVKIT_")},
        "ENVKIT_ROOT": str(ROOT),
        "ENVKIT_CONFIG": "envkit.alpine.toml",
        "ENVKIT_STATE_DIR": str(tmp_path / "state"),
    }
    config = load(ROOT, env)
    assert config.name == "envkit-demo-alpine"
    assert set(config.services) == SERVICES
    assert config.services["postgres"].image == "postgres:16-alpine"
    assert config.images["api"].externals == ("python:3-alpine",)

    never = subprocess.run(
        [sys.executable, "-m", "envkit", "build", "--pull", "never"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert never.returncode == 1
    assert "base image 'python:3-alpine' is not available" in never.stderr
    assert "Traceback" not in never.stderr
