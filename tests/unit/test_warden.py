"""The warden (envkit.stack.warden_main, envkit.stack.warden, envkit.stack.warden_link): its
leases and grace, what it removes and in what order (a fake engine), when a stack gets one, and
the reaper's lease on it."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from envkit.errors import ConfigError
from envkit.remote import ClientContainer, ServiceHost
from envkit.settings import Settings
from envkit.stack import warden, warden_main
from envkit.stack.warden_link import Link, connect

STACK = "demo-1234abcd"


class FakeEngine:
    """The engine API the warden uses, with objects of this stack, another stack, and none."""

    def __init__(self, *, ignores_filters: bool = False) -> None:
        self.ignores_filters = ignores_filters
        self.containers = [
            {"Id": "a" * 64, "Labels": {"envkit.stack": STACK, "envkit.service": "web"}},
            {"Id": "w" * 64, "Labels": {"envkit.stack": STACK, "envkit.role": "warden"}},
            {"Id": "b" * 64, "Labels": {"envkit.stack": STACK, "envkit.service": "db"}},
            {"Id": "o" * 64, "Labels": {"envkit.stack": "other-1", "envkit.service": "web"}},
            {"Id": "u" * 64, "Labels": {}},
        ]
        self.networks = [
            {"Id": "n1", "Name": STACK, "Labels": {"envkit.stack": STACK}},
            {"Id": "n2", "Name": "other-1", "Labels": {"envkit.stack": "other-1"}},
            {"Id": "n3", "Name": "bridge", "Labels": {}},
        ]
        self.volumes = [
            {"Name": f"{STACK}_data", "Labels": {"envkit.stack": STACK}},
            {"Name": "other-1_data", "Labels": {"envkit.stack": "other-1"}},
            {"Name": "precious", "Labels": None},
        ]
        self.calls: list[tuple[str, str, Any]] = []

    def _filter(self, items: list[dict[str, Any]], query: dict[str, str]) -> list[dict[str, Any]]:
        if self.ignores_filters or "filters" not in query:
            return items
        (wanted,) = json.loads(query["filters"])["label"]
        key, _, value = wanted.partition("=")
        return [i for i in items if (i.get("Labels") or {}).get(key) == value]

    def get(self, path: str, query: dict[str, str]) -> Any:
        if path == "/containers/json":
            return self._filter(self.containers, query)
        if path == "/networks":
            return self._filter(self.networks, query)
        if path == "/volumes":
            return {"Volumes": self._filter(self.volumes, query)}
        if path.startswith("/networks/"):
            return {"Containers": {"client-container": {}}}
        raise AssertionError(path)

    def call(self, method: str, path: str, query: dict[str, str], body: Any = None) -> int:
        self.calls.append((method, path, body))
        return 204


@pytest.mark.parametrize("ignores_filters", [False, True])
def test_sweep_removes_only_the_stack_s_objects_containers_then_networks_then_volumes_itself_last(
    ignores_filters: bool,
) -> None:
    engine = FakeEngine(ignores_filters=ignores_filters)
    done = warden_main.sweep(engine, STACK, say=lambda _: None)
    assert [(m, p) for m, p, _ in engine.calls] == [
        ("DELETE", f"/containers/{'a' * 64}"),
        ("DELETE", f"/containers/{'b' * 64}"),
        ("POST", "/networks/n1/disconnect"),
        ("DELETE", "/networks/n1"),
        ("DELETE", f"/volumes/{STACK}_data"),
        ("DELETE", f"/containers/{'w' * 64}"),  # itself, last
    ]
    assert engine.calls[2][2] == {"Container": "client-container", "Force": True}
    assert done[-1].startswith("warden ")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_leases_wait_for_the_first_client_then_the_grace_after_the_last_one_leaves() -> None:
    leases = warden_main.Leases(grace=10, first=60, silence=15, now=0)
    assert not leases.due(59)
    assert leases.due(60)  # nobody ever came: the first wait, not the grace
    leases = warden_main.Leases(grace=10, first=60, silence=15, now=0)
    leases.opened(5, 1)
    leases.opened(6, 2)
    assert not leases.due(1000)  # held
    leases.closed(5, 3)
    assert not leases.due(1000)  # still one
    leases.closed(6, 20)
    assert not leases.due(29.9)
    assert leases.due(30)  # the grace after the last one left


def test_a_lease_that_says_nothing_for_the_silence_is_over() -> None:
    leases = warden_main.Leases(grace=10, first=60, silence=15, now=0)
    leases.opened(5, 0)
    leases.spoke(5, 10)
    assert leases.silent(24) == []
    assert leases.silent(25) == [5]


def _warden(
    grace: float, silence: float = 15.0, first: float = 30.0
) -> tuple[int, threading.Thread, list[str]]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    ended: list[str] = []

    def run() -> None:
        warden_main.serve(listener, STACK, warden_main.Leases(grace, first, silence, time.monotonic()))
        listener.close()
        ended.append("due")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return port, thread, ended


def test_serve_greets_holds_while_a_client_is_connected_and_ends_a_grace_after_it_left() -> None:
    port, thread, ended = _warden(grace=0.5)
    client = connect(f"127.0.0.1:{port}", STACK)
    assert client is not None
    time.sleep(1.5)
    assert not ended  # held: more than the grace has passed
    client.close()
    thread.join(5)
    assert ended == ["due"]


def test_serve_ends_a_silent_lease_and_a_link_keeps_its_lease_by_writing() -> None:
    port, thread, ended = _warden(grace=0.3, silence=1.0)
    link = Link(STACK)
    for _ in range(12):  # 2.4 s: a silent lease would be over after 1 s
        link.tick(f"127.0.0.1:{port}")
        link.last_beat -= 1.0  # beat at each tick (the real beat is 2 s, the real silence 15 s)
        time.sleep(0.2)
    assert link.held and not ended
    silent = connect(f"127.0.0.1:{port}", STACK)  # a second lease that says nothing
    assert silent is not None
    link.tick(None)  # the state names no warden any more: the link lets go
    assert not link.held
    thread.join(5)
    assert ended == ["due"]  # the silent lease did not hold it
    silent.close()


def test_connect_refuses_a_port_that_names_another_stack_or_says_nothing() -> None:
    port, thread, _ = _warden(grace=0.2, first=0.5)
    assert connect(f"127.0.0.1:{port}", "another-stack") is None
    thread.join(5)
    quiet = socket.socket()
    quiet.bind(("127.0.0.1", 0))
    quiet.listen()  # accepts (as docker-proxy does before its container listens), never greets
    assert connect(f"127.0.0.1:{quiet.getsockname()[1]}", STACK, timeout=0.3) is None
    quiet.close()


def _host(*, local: bool, client: bool = False) -> ServiceHost:
    return ServiceHost(
        host="127.0.0.1" if local else "10.0.0.5",
        source="test",
        publish="127.0.0.1",
        publish_source="test",
        engine="unix:///var/run/docker.sock" if local else "tcp://10.0.0.5:2375",
        engine_local=local,
        engine_socket=local,
        client=ClientContainer("c" * 64, "devbox") if client else None,
    )


@pytest.mark.parametrize(
    ("env", "local", "client", "on"),
    [
        ({}, True, False, False),  # the machine that dies takes the engine with it
        ({}, False, False, True),
        ({}, True, True, True),  # a devcontainer: the container may die, its engine stays
        ({"ENVKIT_WARDEN": "0"}, False, False, False),
        ({"ENVKIT_WARDEN": "1"}, True, False, True),
        ({"ENVKIT_WARDEN": "auto"}, False, False, True),
        ({"ENVKIT_WARDEN": "off"}, True, True, False),
    ],
)
def test_a_stack_gets_a_warden_when_its_engine_may_outlive_this_machine(
    env: dict[str, str], local: bool, client: bool, on: bool
) -> None:
    wanted, why = warden.wanted(_host(local=local, client=client), Settings.from_env(env))
    assert wanted is on and why


def test_warden_settings_are_checked() -> None:
    defaults = Settings.from_env({})
    assert (defaults.warden, defaults.warden_grace, defaults.warden_socket) == (
        None,
        10.0,
        "/var/run/docker.sock",
    )
    chosen = Settings.from_env(
        {"ENVKIT_WARDEN_GRACE": "3", "ENVKIT_WARDEN_SOCKET": "/run/podman/podman.sock"}
    )
    assert (chosen.warden_grace, chosen.warden_socket) == (3.0, "/run/podman/podman.sock")
    for env, problem in [
        ({"ENVKIT_WARDEN": "maybe"}, "'maybe' is not 1, 0 or auto"),
        ({"ENVKIT_WARDEN_GRACE": "-1"}, "not a number of seconds"),
        ({"ENVKIT_WARDEN_SOCKET": "docker.sock"}, "not an absolute path"),
    ]:
        with pytest.raises(ConfigError, match=problem):
            Settings.from_env(env)


def test_the_warden_image_project_carries_the_program_and_is_rewritten_only_when_it_differs(
    tmp_path: Any,
) -> None:
    root = warden.project(tmp_path)
    program = root / "images" / "warden" / "warden_main.py"
    assert program.read_text() == Path(warden_main.__file__).read_text()
    assert "FROM warden-python" in (root / "images" / "warden" / "Dockerfile").read_text()
    before = program.stat().st_mtime_ns
    time.sleep(0.01)
    warden.project(tmp_path)
    assert program.stat().st_mtime_ns == before
