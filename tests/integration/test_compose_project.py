"""A compose project written like real ones, run by ``pytest -n 2`` with envkit's plugin.

The project has no envkit.toml: envkit finds its compose.yaml. The file uses what real
files use: anchors and ``<<`` merges, interpolation (``${VAR:?}``, ``${VAR:-default}``,
``$$``) from the process environment over a ``.env``, an ``env_file``, build args and a
multi-stage ``target`` (the last stage fails if it is ever built), a one-shot ``migrate``
gating ``app`` through ``service_completed_successfully``, a ``service_healthy`` dependency
on ``db`` with a ``CMD-SHELL`` check, a named volume that ``migrate`` writes and ``app``
reads, a network alias ``app`` reaches ``db`` by, a profiled service, fixed host ports,
``container_name`` and a command folded over lines (``>-``).

The inner tests check the meaning from the inside, through what each container recorded
when it started (served over HTTP by busybox httpd): the environment that reached it, the
stage and build arg it was built with, what the volume held and whether ``db`` answered.
``db`` answers only two seconds after its start, and ``migrate`` writes two seconds after
its own: a dependent that did not wait would have recorded nothing. The fixed host ports
are held by this test during the run, so a stack that used them would not start.

From the outside, the daemon's events (filtered by the stack's label) say which containers
were created, under which names, and in which order they started and ended; and once the
session is over no container, network or volume of the stack is left.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import socket
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import engine_client
import psutil
import pytest
from conftest import Project

from envkit.config.find import load
from envkit.docker import labels
from integration import events

pytest_plugins = ["pytester"]
pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

DEFAULT_SERVICES = {"migrate", "db", "app"}
RUN_TIMEOUT = 200.0  # seconds: a guard against a hanging inner session

COMPOSE = """\
name: {stack}

x-build: &build
  context: .
  dockerfile: docker/Dockerfile
  args:
    BASE_IMAGE: ${{BASE_IMAGE:?set BASE_IMAGE in .env}}
    APP_FLAVOUR: ${{APP_FLAVOUR}}

x-app-env: &app-env
  TZ: UTC
  STACK_TAG: ${{STACK_TAG:-local}}
  LOG_LEVEL: ${{LOG_LEVEL}}

x-common: &common
  labels:
    org.example.team: qa
  restart: unless-stopped

services:
  migrate:
    <<: *common
    build:
      <<: *build
      target: tools
    environment:
      <<: *app-env
      SCHEMA_VERSION: "${{SCHEMA_VERSION:-0}}"
    command:
      - sh
      - -c
      - sleep 2 && echo "schema $${{SCHEMA_VERSION}} by $$(cat /etc/stage)" > /data/migrated
    volumes:
      - appdata:/data
    restart: "no"

  db:
    <<: *common
    image: ${{BASE_IMAGE}}
    container_name: {stack}-fixed-db
    env_file: config/db.env
    command: >-
      sh -c 'sleep 2; mkdir /www;
      echo "ready $$DB_NAME" >/www/ready;
      exec httpd -f -p 5432 -h /www'
    ports:
      - "{db_port}:5432"
    networks:
      default:
        aliases: [database]
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O - http://127.0.0.1:5432/ready | grep -q '^ready '"]
      interval: 1s
      timeout: 2s
      retries: 30

  app:
    <<: *common
    build:
      <<: *build
      target: app
    image: localhost/{stack}-app:${{TAG:-dev}}
    container_name: {stack}-fixed-app
    env_file:
      - ./config/app.env
    environment:
      <<: *app-env
      API_MODE: test
      DATABASE_URL: http://database:5432/  # db's alias on the stack's network
    volumes:
      - type: volume
        source: appdata
        target: /srv/www/data
        read_only: true
    ports:
      - "127.0.0.1:{app_port}:8000"
    command: ["/usr/local/bin/start-app"]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8000/env"]
      interval: 1s
      retries: 30
    depends_on:
      migrate:
        condition: service_completed_successfully
      db:
        condition: service_healthy

  debug:
    image: ${{BASE_IMAGE}}
    profiles: [debug]
    command: ["sleep", "3600"]
    ports:
      - "9999:9999"
    depends_on: [db]

volumes:
  appdata: {{}}
"""

DOTENV = """\
# read by envkit for interpolation, as compose reads it
BASE_IMAGE={base}
APP_FLAVOUR=blue
SCHEMA_VERSION=7
LOG_LEVEL=info
"""

APP_ENV = """\
# the app's settings: environment: in compose.yaml wins over these
API_MODE=from-env-file
LOG_FORMAT=json
GREETING="hello, ${APP_FLAVOUR} world"
"""

DB_ENV = """\
DB_NAME=orders
"""

DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE} AS common
ARG APP_FLAVOUR=plain
RUN mkdir -p /srv/www /usr/local/bin && echo "$APP_FLAVOUR" > /etc/flavour

FROM common AS tools
RUN echo tools > /etc/stage

FROM common AS app
COPY docker/start-app /usr/local/bin/start-app
RUN echo app > /etc/stage

# never built: the services name their targets
FROM common AS prod
RUN echo prod > /etc/stage && exit 1
"""

# What app sees when it starts, written where its httpd serves it.
START_APP = """\
#!/bin/sh
cd /srv/www
cat data/migrated > seen-at-start 2>/dev/null || echo nothing > seen-at-start
wget -q -O db-at-start "$DATABASE_URL/ready" 2>/dev/null || echo unreachable > db-at-start
env | sort > env
cat /etc/stage /etc/flavour > build
exec httpd -f -p 8000 -h /srv/www
"""

INNER_HELPERS = '''
import urllib.request

from engine_client import docker_api_client

STACK_LABEL = "envkit.stack"


def get(stack, service, port, path):
    with urllib.request.urlopen(stack.url(service, port) + path, timeout=10) as response:
        assert response.status == 200
        return response.read().decode()


def containers(stack):
    """This stack's containers by service, inspected."""
    client = docker_api_client()
    found = client.containers(all=True, filters={"label": f"{STACK_LABEL}={stack.stack}"})
    return {c["Labels"]["envkit.service"]: client.inspect_container(c["Id"]) for c in found}


def volumes(stack):
    client = docker_api_client()
    return client.volumes(filters={"label": f"{STACK_LABEL}={stack.stack}"}).get("Volumes") or []
'''

INNER_APP = """
import pytest
from inner_helpers import containers, get, volumes

pytestmark = pytest.mark.services("app")  # and migrate and db with it
DB_PORT, APP_PORT = __FIXED_PORTS__  # the host ports compose.yaml names (taken by the outer test)


def test_the_build_arg_and_the_target_stage(envkit_stack):
    assert get(envkit_stack, "app", 8000, "/build") == "app\\nblue\\n"


def test_the_environment_from_the_file_the_env_file_dotenv_and_the_process(envkit_stack):
    env = dict(line.split("=", 1) for line in get(envkit_stack, "app", 8000, "/env").splitlines())
    assert env["API_MODE"] == "test"  # environment: over env_file
    assert env["LOG_FORMAT"] == "json"  # env_file
    assert env["GREETING"] == "hello, blue world"  # env_file, interpolated from .env
    assert env["LOG_LEVEL"] == "debug"  # the process environment over .env
    assert env["STACK_TAG"] == "local"  # a default
    assert env["TZ"] == "UTC"  # an anchor merged with <<
    assert env["DATABASE_URL"] == "http://database:5432/"
    assert "SCHEMA_VERSION" not in env  # migrate's, not app's


def test_migrate_had_written_the_volume_before_app_started(envkit_stack):
    assert get(envkit_stack, "app", 8000, "/seen-at-start") == "schema 7 by tools\\n"
    assert get(envkit_stack, "app", 8000, "/data/migrated") == "schema 7 by tools\\n"
    inspected = containers(envkit_stack)
    state = inspected["migrate"]["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 0)
    assert state["FinishedAt"] < inspected["app"]["State"]["StartedAt"]
    [volume] = volumes(envkit_stack)
    assert volume["Name"] == envkit_stack.stack + "_appdata"
    for service, target in (("migrate", "/data"), ("app", "/srv/www/data")):
        mounts = {m["Destination"]: m for m in inspected[service]["Mounts"]}
        assert mounts[target]["Type"] == "volume" and mounts[target]["Name"] == volume["Name"], service
    assert {m["Destination"]: m["RW"] for m in inspected["app"]["Mounts"]}["/srv/www/data"] is False


def test_db_answered_before_app_started(envkit_stack):
    assert get(envkit_stack, "app", 8000, "/db-at-start") == "ready orders\\n"


@pytest.mark.parametrize("service, port, fixed", [("app", 8000, APP_PORT), ("db", 5432, DB_PORT)])
def test_ports_are_on_localhost_at_ports_the_engine_picked(envkit_stack, service, port, fixed):
    host, published = envkit_stack.endpoint(service, port)
    assert host == "127.0.0.1"
    assert published != fixed
    bindings = containers(envkit_stack)[service]["HostConfig"]["PortBindings"]
    assert bindings == {f"{port}/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
"""

INNER_DB = """
import pytest
from inner_helpers import get

pytestmark = pytest.mark.services("db")


@pytest.mark.parametrize("i", range(4))
def test_db_answers(envkit_stack, i):
    assert get(envkit_stack, "db", 5432, "/ready") == "ready orders\\n"
"""

# Where the stack stands once the inner session is over, before its process exits (before its
# atexit hooks run, and before a reaper could notice it is gone).
INNER_CONFTEST = """
import json
from pathlib import Path

from engine_client import docker_api_client

LABEL = {label!r}


def pytest_unconfigure(config):
    if hasattr(config, "workerinput"):
        return
    client = docker_api_client()
    left = {{
        "containers": sorted(c["Names"][0] for c in client.containers(all=True, filters={{"label": LABEL}})),
        "networks": sorted(n["Name"] for n in client.networks(filters={{"label": LABEL}})),
        "volumes": sorted(v["Name"] for v in client.volumes(filters={{"label": LABEL}}).get("Volumes") or []),
    }}
    Path(__file__).with_name("after-session.json").write_text(json.dumps(left))
"""
NOTHING: dict[str, list[str]] = {"containers": [], "networks": [], "volumes": []}
INNER_PASSED = 10


@dataclass
class Event:
    action: str
    service: str
    name: str
    exit_code: str | None
    nanos: int


def free_port() -> socket.socket:
    """A listening socket on 127.0.0.1 at a port the kernel chose: a fixed port that is taken."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@contextlib.contextmanager
def taken_ports(count: int) -> Iterator[list[int]]:
    socks = [free_port() for _ in range(count)]
    try:
        yield [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def write_project(project: Project, db_port: int, app_port: int) -> None:
    stack = project.stack
    project.write("compose.yaml", COMPOSE.format(stack=stack, db_port=db_port, app_port=app_port))
    project.write(".env", DOTENV.format(base=project.base))
    project.write("config/app.env", APP_ENV)
    project.write("config/db.env", DB_ENV)
    project.write("docker/Dockerfile", DOCKERFILE)
    project.write("docker/start-app", START_APP, mode=0o755)
    project.write(".dockerignore", "*\n!docker/\n")
    project.write("pytest.ini", "[pytest]\n")
    project.write("inner_helpers.py", INNER_HELPERS)
    project.write("engine_client.py", engine_client.FILE.read_text())  # the tests' docker-py client
    project.write(
        "test_app.py", textwrap.dedent(INNER_APP.replace("__FIXED_PORTS__", f"{db_port}, {app_port}"))
    )
    project.write("test_db.py", textwrap.dedent(INNER_DB))


def container_events(label: str, since: float, until: float) -> list[Event]:
    return [
        Event(
            action=e["Action"],
            service=str(e["Actor"]["Attributes"].get(labels.SERVICE)),
            name=str(e["Actor"]["Attributes"].get("name")),
            exit_code=e["Actor"]["Attributes"].get("exitCode"),
            nanos=int(e["timeNano"]),
        )
        for e in events.log().between(since, until, label=label)
    ]


def first(events: list[Event], action: str, service: str) -> Event:
    found = [e for e in events if e.action == action and e.service == service]
    assert found, f"no {action} event for {service}"
    return found[0]


def leftovers(client: docker.APIClient, label: str) -> dict[str, list[str]]:
    return {
        "containers": sorted(c["Names"][0] for c in client.containers(all=True, filters={"label": label})),
        "networks": sorted(n["Name"] for n in client.networks(filters={"label": label})),
        "volumes": sorted(v["Name"] for v in client.volumes(filters={"label": label}).get("Volumes") or []),
    }


def remove_stack(client: docker.APIClient, label: str, state_dir: Path) -> None:
    """Stop the stack's reapers, remove whatever carries its label."""
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "envkit.stack.reaper" in cmd and str(state_dir) in cmd:
            with contextlib.suppress(psutil.Error):
                proc.kill()
    for c in client.containers(all=True, filters={"label": label}):
        client.remove_container(c["Id"], force=True, v=True)
    for n in client.networks(filters={"label": label}):
        client.remove_network(n["Id"])
    for v in client.volumes(filters={"label": label}).get("Volumes") or []:
        client.remove_volume(v["Name"], force=True)


def test_a_compose_project_runs_under_pytest_n2_once_per_service_in_order_and_leaves_nothing(
    project: Project,
    docker_client: docker.APIClient,
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    with taken_ports(2) as (db_port, app_port):
        write_project(project, db_port, app_port)
        monkeypatch.chdir(project.root)
        for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
            monkeypatch.delenv(name, raising=False)
        for name in ("COMPOSE_FILE", "COMPOSE_PROFILES", "COMPOSE_PROJECT_NAME", "TAG", "STACK_TAG"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("ENVKIT_STATE_DIR", str(state_dir))
        monkeypatch.setenv("ENVKIT_GRACE", "0")
        monkeypatch.setenv("LOG_LEVEL", "debug")  # the environment wins over .env

        config = load(project.root, dict(os.environ))
        label = labels.selector(labels.STACK, config.id)
        assert set(config.services) == DEFAULT_SERVICES  # debug's profile is not active
        assert config.file == project.root / "compose.yaml"
        notes = "\n".join(config.notes)
        assert "container_name ignored (db, app)" in notes
        assert "not in the stack: debug" in notes
        project.write("conftest.py", INNER_CONFTEST.format(label=label))

        since = time.time()
        try:
            result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", timeout=RUN_TIMEOUT)
            until = time.time()
            output = "\n".join(result.outlines + result.errlines)
            assert result.ret == 0, output
            result.assert_outcomes(passed=INNER_PASSED)

            after = project.root / "after-session.json"
            assert after.exists(), output
            assert json.loads(after.read_text()) == NOTHING  # torn down at the session's end
            assert leftovers(docker_client, label) == NOTHING

            seen = container_events(label, since, until)
            creates = collections.Counter(e.service for e in seen if e.action == "create")
            assert creates == dict.fromkeys(DEFAULT_SERVICES, 1), seen  # and none for debug
            # envkit's names, not container_name's
            names = {e.service: e.name for e in seen if e.action == "create"}
            assert names == {s: f"{config.id}-{s}" for s in DEFAULT_SERVICES}
            # migrate ran to success, and db started, before app started
            app_start = first(seen, "start", "app").nanos
            migrate_end = first(seen, "die", "migrate")
            assert migrate_end.exit_code == "0"
            assert first(seen, "start", "migrate").nanos < migrate_end.nanos < app_start
            assert first(seen, "start", "db").nanos < app_start

            # app's `image:` beside its `build:` names the image envkit built, as compose tags it
            [app_tag] = config.images["app"].also_tags
            assert app_tag == f"localhost/{project.stack}-app:dev"
            built = docker_client.images(filters={"label": f"{labels.PROJECT}={config.name}"})
            assert docker_client.inspect_image(app_tag)["Id"] in {i["Id"] for i in built}
        finally:
            remove_stack(docker_client, label, state_dir)
