"""The service host and the publish address (envkit.remote): derived from the engine's endpoint,
overridden by ENVKIT_HOST / [stack] host and ENVKIT_PUBLISH / [stack] publish, validated, recorded in
the stack's state and shown by `envkit status` and `envkit config`."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from fake_engine import FakeDaemon

from envkit.config.find import load
from envkit.config.model import StackConfig
from envkit.docker.transport import Endpoint, discover
from envkit.errors import ConfigError, ServiceUnhealthy
from envkit.remote import (
    LOCAL,
    endpoint_address,
    is_loopback,
    loopback_cache_warning,
    service_host,
    warn_cache_reach,
    warn_loopback_cache,
)
from envkit.settings import Settings
from envkit.stack import reaper
from envkit.stack.handle import StackHandle, handle
from envkit.stack.stack import Stack
from envkit.stack.state import ServiceState, StackState, StateFile
from envkit.stack.wanted import inputs_hash

STACK = '[stack]\nname = "demo"\n{extra}\n[services.web]\nimage = "nginx:1"\nports = [80]\n'


def config(tmp_path: Path, extra: str = "", compose: str | None = None) -> StackConfig:
    (tmp_path / "envkit.toml").write_text(STACK.format(extra=extra))
    if compose is not None:
        (tmp_path / "compose.yaml").write_text(compose)
    return load(tmp_path, environ={})


def at(host: str) -> Endpoint:
    return Endpoint(host, "DOCKER_HOST")


# --- the engine's address ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "address"),
    [
        ("unix:///var/run/docker.sock", None),
        ("unix://", None),
        ("npipe:////./pipe/docker_engine", None),
        ("tcp://10.0.0.5:2375", "10.0.0.5"),
        ("tcp://Docker-Host.example:2376", "Docker-Host.example"),  # as written: nothing resolved
        ("tcp://[fd00::5]:2375", "fd00::5"),
        ("ssh://me@build-host", "build-host"),
        ("ssh://me@build-host:2222", "build-host"),
        ("https://engine.example:2376/", "engine.example"),
        ("docker-host:2375", "docker-host"),  # docker-py takes a bare host:port as tcp
    ],
)
def test_the_engine_address_of_an_endpoint(endpoint: str, address: str | None) -> None:
    assert endpoint_address(endpoint) == address


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("localhost", True), ("LOCALHOST.", True),
     ("10.0.0.5", False), ("0.0.0.0", False), ("docker-host", False), ("::", False)],
)  # fmt: skip
def test_loopback_names(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# --- derivation and precedence -------------------------------------------------------------------


def test_a_local_socket_is_reached_and_published_on_loopback_only(tmp_path: Path) -> None:
    reach = service_host(at("unix:///var/run/docker.sock"), config(tmp_path), Settings())
    assert (reach.host, reach.publish) == ("127.0.0.1", "127.0.0.1")
    assert reach.engine_local and reach.engine_socket and not reach.foreign_loopback
    assert not reach.overridable  # refused connections on a local socket's loopback: a slow service


@pytest.mark.parametrize(
    ("endpoint", "host"),
    [("tcp://10.0.0.5:2375", "10.0.0.5"), ("tcp://docker-host:2376", "docker-host"),
     ("ssh://me@build-host", "build-host")],
)  # fmt: skip
def test_a_remote_engine_is_reached_at_its_address_and_publishes_on_every_interface(
    tmp_path: Path, endpoint: str, host: str
) -> None:
    reach = service_host(at(endpoint), config(tmp_path), Settings())
    assert (reach.host, reach.publish) == (host, "0.0.0.0")
    assert "the engine's address (DOCKER_HOST)" in reach.source
    assert not reach.engine_local and reach.overridable


def test_an_engine_on_a_loopback_tcp_port_is_local(tmp_path: Path) -> None:
    """tcp://127.0.0.1 is this machine (a dockerd on TCP, or a forwarded port: ENVKIT_HOST says so)."""
    reach = service_host(at("tcp://127.0.0.1:2375"), config(tmp_path), Settings())
    assert (reach.host, reach.publish) == ("127.0.0.1", "127.0.0.1")
    assert reach.engine_local and not reach.engine_socket
    assert reach.overridable  # every connection refused: maybe it forwards to another machine


def test_a_docker_contexts_endpoint_is_derived_the_same_way(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"far").hexdigest()
    meta = tmp_path / "docker" / "contexts" / "meta" / digest / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"Name": "far", "Endpoints": {"docker": {"Host": "tcp://far.example:2375"}}}))
    endpoint = discover({"DOCKER_CONFIG": str(tmp_path / "docker"), "DOCKER_CONTEXT": "far"})
    reach = service_host(endpoint, config(tmp_path), Settings())
    assert (reach.host, reach.publish) == ("far.example", "0.0.0.0")
    assert "docker context 'far'" in reach.source


def test_envkit_host_wins_over_the_stack_file_which_wins_over_the_endpoint(tmp_path: Path) -> None:
    file = config(tmp_path, 'host = "from-file"\npublish = "10.0.0.5"')
    endpoint = at("tcp://10.0.0.5:2375")
    reach = service_host(endpoint, file, Settings())
    assert (reach.host, reach.publish) == ("from-file", "10.0.0.5")
    assert reach.source.startswith("[stack] host in ") and reach.publish_source.startswith("[stack] publish")
    env = Settings.from_env({"ENVKIT_HOST": " from-env ", "ENVKIT_PUBLISH": "10.0.0.6"})
    reach = service_host(endpoint, file, env)
    assert (reach.host, reach.source, reach.publish, reach.publish_source) == (
        "from-env", "ENVKIT_HOST", "10.0.0.6", "ENVKIT_PUBLISH"
    )  # fmt: skip


def test_a_local_engine_reached_off_loopback_publishes_on_every_interface(tmp_path: Path) -> None:
    reach = service_host(at("unix:///var/run/docker.sock"), config(tmp_path), Settings(host="192.168.1.20"))
    assert (reach.host, reach.publish) == ("192.168.1.20", "0.0.0.0")


def test_a_loopback_host_for_a_remote_engine_is_foreign(tmp_path: Path) -> None:
    """ENVKIT_HOST=127.0.0.1 with an engine on another machine: a listener there is not its."""
    reach = service_host(at("tcp://10.0.0.5:2375"), config(tmp_path), Settings(host="127.0.0.1"))
    assert reach.foreign_loopback and reach.publish == "0.0.0.0"
    assert "ENVKIT_HOST" in reach.reachable()


def test_compose_stacks_take_host_and_publish_from_the_envkit_toml_that_names_them(tmp_path: Path) -> None:
    compose = "services:\n  db:\n    image: postgres:16\n    ports: ['5432']\n"
    file = config(tmp_path, 'compose = "compose.yaml"\nhost = "docker-host"\npublish = "10.0.0.5"', compose)
    assert set(file.services) == {"web", "db"}
    reach = service_host(at("unix:///var/run/docker.sock"), file, Settings())
    assert (reach.host, reach.publish) == ("docker-host", "10.0.0.5")


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "  ", "tcp://10.0.0.5", "10.0.0.5:2375", "[::1]", "a b", "-x", "h/x"])
def test_a_bad_envkit_host_names_the_variable_and_the_fix(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"ENVKIT_HOST": value})
    assert caught.value.key == "ENVKIT_HOST"
    assert "ENVKIT_HOST=" in caught.value.fix and "unset it" in caught.value.fix


@pytest.mark.parametrize("value", ["docker-host", "10.0.0.5", "::1", "build.example.com", "my_host"])
def test_good_envkit_hosts(value: str) -> None:
    assert Settings.from_env({"ENVKIT_HOST": value}).host == value


@pytest.mark.parametrize("value", ["", "docker-host", "10.0.0.5:80", "0.0.0.0/0", "256.1.1.1"])
def test_a_bad_envkit_publish_names_the_variable_and_the_fix(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"ENVKIT_PUBLISH": value})
    assert caught.value.key == "ENVKIT_PUBLISH"
    assert "ENVKIT_PUBLISH=" in caught.value.fix


@pytest.mark.parametrize(
    ("line", "key"),
    [('host = "tcp://x"', "stack.host"), ("host = 5", "stack.host"), ('host = ""', "stack.host"),
     ('publish = "docker-host"', "stack.publish"), ("publish = 1", "stack.publish")],
)  # fmt: skip
def test_bad_stack_host_or_publish_is_a_config_error(tmp_path: Path, line: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(tmp_path, line)
    assert caught.value.key == key and caught.value.fix


def envkit(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "envkit", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
    )


def test_envkit_config_shows_the_service_host_and_publish_address(tmp_path: Path) -> None:
    (tmp_path / "envkit.toml").write_text(STACK.format(extra=""))
    done = envkit(tmp_path, "config", "--json", DOCKER_HOST="tcp://docker-host:2375")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["host"], data["publish"]) == ("docker-host", "0.0.0.0")
    assert data["host_source"] == "the engine's address (DOCKER_HOST)"
    assert data["stack"] == "demo" and "services" in data  # the fields it had stay
    done = envkit(tmp_path, "config", ENVKIT_HOST="10.1.2.3")
    assert done.returncode == 0, done.stderr
    assert "service host: 10.1.2.3 (from ENVKIT_HOST)" in done.stdout
    assert "ports published on: 0.0.0.0" in done.stdout


@pytest.mark.parametrize(("name", "value"), [("ENVKIT_HOST", "tcp://x:1"), ("ENVKIT_PUBLISH", "docker-host")])
def test_a_bad_value_fails_the_command_naming_the_variable(tmp_path: Path, name: str, value: str) -> None:
    (tmp_path / "envkit.toml").write_text(STACK.format(extra=""))
    done = envkit(tmp_path, "config", **{name: value})
    assert done.returncode != 0
    assert name in done.stderr and "fix:" in done.stderr and "Traceback" not in done.stderr


# --- the handle, the state and the stack ---------------------------------------------------------


def test_the_handle_uses_the_service_host_everywhere() -> None:
    h = StackHandle(stack="s", ports={"web": {80: 40001}}, host="docker-host")
    assert h.endpoint("web", 80) == ("docker-host", 40001)
    assert h.url("web", 80) == "http://docker-host:40001"
    assert h.env() == {"ENVKIT_WEB_HOST": "docker-host", "ENVKIT_WEB_PORT_80": "40001"}
    assert h.endpoints() == {"web": {"80": "docker-host:40001"}}
    six = StackHandle(stack="s", ports={"web": {80: 40001}}, host="fd00::5")
    assert six.url("web", 80) == "http://[fd00::5]:40001"
    assert six.env()["ENVKIT_WEB_HOST"] == "fd00::5"


def test_the_state_carries_the_host_and_the_handle_reads_it(tmp_path: Path) -> None:
    state = StackState(stack="s", project="p", root="/r", host="10.0.0.5", publish="0.0.0.0")
    state.services["web"] = ServiceState(inputs="i", image="x", status="healthy", ports={"80": 40001})
    StateFile(tmp_path).save(state)
    read = StateFile(tmp_path).read()
    assert read is not None and (read.host, read.publish) == ("10.0.0.5", "0.0.0.0")
    assert handle("s", read).url("web", 80) == "http://10.0.0.5:40001"
    assert handle("s", StackState(stack="s", project="p", root="/r")).host == "127.0.0.1"  # older states


def test_a_recorded_failure_keeps_its_fix_through_the_state_and_a_pickle(tmp_path: Path) -> None:
    err = ServiceUnhealthy("web", "TCP port 80", 3.0, "unreachable", ["x"], fix="set ENVKIT_HOST")
    again = pickle.loads(pickle.dumps(err))
    assert again.fix == "set ENVKIT_HOST" and str(again) == str(err) and "fix: set ENVKIT_HOST" in str(err)
    state = StackState(stack="s", project="p", root="/r")
    error = {"service": "web", "check": "c", "seconds": 1.0, "reason": "r", "logs": [], "fix": "f"}
    state.services["web"] = ServiceState(inputs="i", image="x", status="failed", error=error)
    StateFile(tmp_path).save(state)
    read = StateFile(tmp_path).read()
    assert read is not None and ServiceUnhealthy(**read.services["web"].error).fix == "f"  # type: ignore[arg-type]


def test_the_publish_address_is_part_of_a_services_inputs(tmp_path: Path) -> None:
    spec = config(tmp_path).services["web"]
    assert inputs_hash(spec, "img") == inputs_hash(spec, "img", "127.0.0.1")  # a local stack keeps its hash
    assert inputs_hash(spec, "img", "0.0.0.0") != inputs_hash(spec, "img")


@pytest.fixture
def remote_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Stack, FakeDaemon]:
    monkeypatch.setattr(reaper, "spawn", lambda *args: True)
    monkeypatch.setattr(reaper, "running", lambda state_dir: True)
    fake = FakeDaemon()
    fake.endpoint = Endpoint("tcp://10.0.0.5:2375", "DOCKER_HOST")
    stack = Stack(config(tmp_path), fake, settings=Settings(warden=False, lock_timeout=5.0, grace=0.0))  # type: ignore[arg-type]
    return stack, fake


def test_a_remote_stack_publishes_on_every_interface_and_reports_the_engines_address(
    remote_stack: tuple[Stack, FakeDaemon],
) -> None:
    stack, fake = remote_stack
    held = stack.acquire(["web"])
    try:
        (container,) = fake.containers_by_id.values()
        assert container.spec.host == "0.0.0.0"
        port = container.ports["80"]
        assert held.handle.url("web", 80) == f"http://10.0.0.5:{port}"
        assert held.handle.env()["ENVKIT_WEB_HOST"] == "10.0.0.5"
        state = StateFile(stack.state_dir).read()
        assert state is not None and (state.host, state.publish) == ("10.0.0.5", "0.0.0.0")
        info = stack.status()
        assert (info["host"], info["publish"]) == ("10.0.0.5", "0.0.0.0")
        assert info["services"]["web"]["endpoints"] == {"80": f"10.0.0.5:{port}"}
        assert info["engine"]["host"] == "tcp://10.0.0.5:2375"  # the fields it had stay
    finally:
        held.release()


def test_status_shows_what_the_stack_recorded_over_this_processs_own_view(
    remote_stack: tuple[Stack, FakeDaemon], tmp_path: Path
) -> None:
    """`envkit status` from a shell without ENVKIT_HOST agrees with the holders that set it."""
    stack, fake = remote_stack
    joined = Stack(stack.config, fake, settings=Settings(warden=False, lock_timeout=5.0, host="engine.lan"))  # type: ignore[arg-type]
    held = joined.acquire(["web"])
    try:
        info = stack.status()
        assert info["host"] == "engine.lan" and info["host_source"].startswith("recorded by")
        port = next(iter(fake.containers_by_id.values())).ports["80"]
        assert info["services"]["web"]["endpoints"] == {"80": f"engine.lan:{port}"}
    finally:
        held.release()


# --- a remote cache on a loopback address ----------------------------------------------------------


@pytest.mark.parametrize(
    ("repository", "endpoint", "warned"),
    [
        ("127.0.0.1:5000/envkit", "tcp://10.0.0.5:2375", True),
        ("localhost:5000/envkit", "ssh://me@build-host", True),
        ("[::1]:5000/team/envkit", "tcp://docker-host:2376", True),
        ("127.0.0.1:5000/envkit", "unix:///var/run/docker.sock", False),  # a local engine: same loopback
        ("127.0.0.1:5000/envkit", "tcp://127.0.0.1:2375", False),  # the endpoint is on loopback too
        ("registry.lan:5000/envkit", "tcp://10.0.0.5:2375", False),
        ("team/envkit", "tcp://10.0.0.5:2375", False),  # Docker Hub
        ("ghcr.io/team/envkit", "tcp://10.0.0.5:2375", False),
    ],
)
def test_when_a_loopback_cache_is_worth_a_warning(repository: str, endpoint: str, warned: bool) -> None:
    message = loopback_cache_warning(repository, "ENVKIT_CACHE", at(endpoint))
    assert (message is not None) is warned
    if message:
        assert repository in message and "the engine, not this machine, resolves" in message


def test_the_loopback_cache_warning_is_given_once_per_process(caplog: pytest.LogCaptureFixture) -> None:
    endpoint = at("tcp://10.9.8.7:2375")
    assert warn_loopback_cache("127.0.0.1:5999/once", "ENVKIT_CACHE", endpoint)
    assert not warn_loopback_cache("127.0.0.1:5999/once", "ENVKIT_CACHE", endpoint)
    assert not warn_loopback_cache(None, "ENVKIT_CACHE", endpoint)
    assert [r.getMessage() for r in caplog.records].count(
        "envkit: " + str(loopback_cache_warning("127.0.0.1:5999/once", "ENVKIT_CACHE", endpoint))
    ) == 1


def test_the_local_default() -> None:
    assert (LOCAL.host, LOCAL.publish, LOCAL.foreign_loopback, LOCAL.overridable) == (
        "127.0.0.1", "127.0.0.1", False, False
    )  # fmt: skip


def test_a_build_against_a_remote_engine_warns_once_of_a_loopback_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Where builds start (`envkit build`, `envkit e2e`, an acquire): the stack's cache, one warning."""
    file = config(tmp_path, 'cache = "127.0.0.1:5998/warned"')
    endpoint = at("tcp://10.7.7.7:2375")
    assert warn_cache_reach(file, Settings(), endpoint)
    assert not warn_cache_reach(file, Settings(), endpoint)  # once per process
    assert not warn_cache_reach(file, Settings(cache=""), at("tcp://10.7.7.8:2375"))  # ENVKIT_CACHE="": none
    assert not warn_cache_reach(file, Settings(), at("unix:///var/run/docker.sock"))
    (record,) = [r for r in caplog.records if "warned" in r.getMessage()]
    assert "[stack] cache in" in record.getMessage() and record.levelname == "WARNING"
