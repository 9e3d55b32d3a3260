"""A client in a container of the engine (envkit.reach): its container found from the files the
engine gives it and confirmed by the engine, the choice between published ports and the stack's
network (ENVKIT_REACH, ENVKIT_HOST), endpoints and health checks at the containers' names, its
container joined to the stack's network and disconnected before the network goes."""

from __future__ import annotations

import dataclasses
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_engine import FakeDaemon

from envkit import reach
from envkit.config.find import load
from envkit.config.model import HealthCheck, ServiceSpec
from envkit.docker.engine import ContainerDetails
from envkit.docker.transport import Endpoint
from envkit.errors import ConfigError, ServiceUnhealthy
from envkit.reach import Clues, candidates, cgroup_ids, clues, containerenv_id, detect, mountinfo_ids
from envkit.remote import LOCAL, ClientContainer, ServiceHost, service_host
from envkit.settings import Settings
from envkit.stack import reaper
from envkit.stack.handle import StackHandle, handle
from envkit.stack.health import wait_healthy
from envkit.stack.stack import Stack
from envkit.stack.state import ServiceState, StackState

ID = "3f4c2a1b" * 8  # a container's 64-hex ID
OTHER = "9e8d7c6b" * 8

# --- the files' clues --------------------------------------------------------------------------------

# Docker on a cgroup v1 host (this machine's 20.10): the engine's per-container files are bind
# mounted at /etc/resolv.conf, /etc/hostname and /etc/hosts; the cgroup path names the ID too.
DOCKER_MOUNTINFO = f"""\
1412 1226 0:118 / / rw,relatime master:570 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X
1413 1412 0:121 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1438 1412 254:1 /var/lib/docker/containers/{ID}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda1 rw
1439 1412 254:1 /var/lib/docker/containers/{ID}/hostname /etc/hostname rw,relatime - ext4 /dev/vda1 rw
1440 1412 254:1 /var/lib/docker/containers/{ID}/hosts /etc/hosts rw,relatime - ext4 /dev/vda1 rw
1441 1412 254:1 /var/lib/docker/volumes/{OTHER}/_data /data rw,relatime - ext4 /dev/vda1 rw
"""
CGROUP_V1 = f"""\
12:memory:/docker/{ID}
11:cpu,cpuacct:/docker/{ID}
1:name=systemd:/docker/{ID}
"""
# cgroup v2 with a private cgroup namespace (Docker's default there): the path says nothing;
# /var/lib/docker on its own filesystem: the mount's root is relative to it.
CGROUP_V2 = "0::/\n"
V2_MOUNTINFO = f"""\
700 650 0:52 / / rw - overlay overlay rw
712 700 8:17 /containers/{ID}/hostname /etc/hostname rw,relatime - ext4 /dev/sdb1 rw
"""
# cgroup v2 without a namespace, systemd's cgroup driver: docker-<id>.scope
CGROUP_V2_SYSTEMD = f"0::/system.slice/docker-{ID}.scope\n"
# Podman, rootless: its per-container files under overlay-containers/<id>/userdata; a privileged
# container's /run/.containerenv names the ID (an unprivileged one's is empty)
PODMAN_STORE = "/user/containers/storage/overlay-containers"
PODMAN_MOUNTINFO = f"""\
901 880 0:61 / / rw - overlay overlay rw
920 901 0:30 {PODMAN_STORE}/{ID}/userdata/hostname /etc/hostname rw - tmpfs tmpfs rw
921 901 0:30 {PODMAN_STORE}/{ID}/userdata/.containerenv /run/.containerenv rw - tmpfs tmpfs rw
"""
CONTAINERENV = f'engine="podman-5.4.2"\nname="dev"\nid="{ID}"\nimage="localhost/dev:1"\nrootless=1\n'
CGROUP_PODMAN = f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container\n"
# A laptop: no marker, no engine mounts, a user slice, a host name
HOST_MOUNTINFO = "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n"
HOST_CGROUP = "0::/user.slice/user-1000.slice/session-2.scope\n"


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        (Clues(True, DOCKER_MOUNTINFO, CGROUP_V1, "", ID[:12]), [ID]),
        (Clues(True, V2_MOUNTINFO, CGROUP_V2, "", "devbox"), [ID]),
        (Clues(True, "", CGROUP_V2_SYSTEMD, "", "devbox"), [ID]),
        (Clues(True, PODMAN_MOUNTINFO, CGROUP_PODMAN, CONTAINERENV, "dev"), [ID]),
        (Clues(True, "", CGROUP_V2, "", OTHER[:12]), [OTHER[:12]]),  # only the default hostname
        (Clues(False, HOST_MOUNTINFO, HOST_CGROUP, "", "laptop"), []),
        (Clues(False, HOST_MOUNTINFO, HOST_CGROUP, "", "cafe12345678"), []),  # a hex name, no marker
        (Clues(True, "", CGROUP_V2, "", "vm"), []),  # a container that names no ID of its own
    ],
    ids=[
        "docker-cgroup-v1",
        "cgroup-v2-namespaced",
        "cgroup-v2-systemd",
        "podman",
        "hostname-only",
        "not-in-a-container",
        "hex-hostname-outside",
        "marker-only",
    ],
)
def test_the_candidate_ids_come_from_the_engines_mounts_the_cgroup_and_the_hostname(
    found: Clues, expected: list[str]
) -> None:
    assert candidates(found) == expected


def test_each_file_is_read_for_its_own_kind_of_clue() -> None:
    assert mountinfo_ids(DOCKER_MOUNTINFO) == [ID, ID, ID]  # a volume's ID at /data is not one
    assert mountinfo_ids(PODMAN_MOUNTINFO) == [ID, ID]
    assert cgroup_ids(CGROUP_V1) == [ID, ID, ID] and cgroup_ids(CGROUP_V2) == []
    assert cgroup_ids(CGROUP_PODMAN) == [ID]
    assert containerenv_id(CONTAINERENV) == ID
    assert containerenv_id("") is None and containerenv_id('id="not-an-id"\n') is None


def test_the_clues_are_read_from_files_under_a_root(tmp_path: Path) -> None:
    assert clues(tmp_path, hostname="h") == Clues(False, "", "", "", "h")
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/mountinfo").write_text(DOCKER_MOUNTINFO)
    (tmp_path / "proc/self/cgroup").write_text(CGROUP_V1)
    (tmp_path / ".dockerenv").write_text("")
    found = clues(tmp_path, hostname=ID[:12])
    assert found.marker and candidates(found) == [ID]
    (tmp_path / ".dockerenv").unlink()
    (tmp_path / "run").mkdir()
    (tmp_path / "run/.containerenv").write_text(CONTAINERENV)
    assert clues(tmp_path, hostname="x").marker  # Podman's marker


# --- the choice: ports or network ----------------------------------------------------------------


def engine_knowing(*infos: dict[str, Any]) -> FakeDaemon:
    fake = FakeDaemon()
    fake.infos = {str(info["Id"]): info for info in infos}
    return fake


def info(cid: str = ID, name: str = "/dev", mode: str = "bridge") -> dict[str, Any]:
    return {"Id": cid, "Name": name, "HostConfig": {"NetworkMode": mode}}


IN_DEV = Clues(True, DOCKER_MOUNTINFO, CGROUP_V1, "", ID[:12])
OUTSIDE = Clues(False, HOST_MOUNTINFO, HOST_CGROUP, "", "laptop")


def choose(fake: FakeDaemon, found: Clues, **settings: Any) -> ServiceHost:
    chosen = Settings(**settings)
    return detect(service_host(fake.endpoint, None, chosen), fake, chosen, found)  # type: ignore[arg-type]


def test_a_client_in_a_container_of_the_engine_reaches_the_services_over_the_network() -> None:
    fake = engine_knowing(info())
    chosen = choose(fake, IN_DEV)
    assert chosen.client == ClientContainer(ID, "dev") and chosen.network
    assert chosen.reach_json() == {
        "reach": "network",
        "reach_source": "this process runs in the container dev of the engine",
        "client_container": {"id": ID, "name": "dev"},
    }
    assert (chosen.host, chosen.publish) == ("127.0.0.1", "127.0.0.1")  # ports are still published


def test_outside_a_container_the_engine_is_not_even_asked() -> None:
    fake = engine_knowing(info())
    chosen = choose(fake, OUTSIDE)
    assert not chosen.network and chosen.reach_json()["reach"] == "ports"
    assert chosen.reach_source == "outside any container"
    assert "container_info" not in fake.calls


def test_inside_an_engines_own_container_its_ports_are_local() -> None:
    """docker:dind, and the engine matrix: the client beside the engine, in the engine's
    container, talks to that engine, which does not know the container it runs in."""
    fake = engine_knowing()  # the inner engine knows only its own containers
    chosen = choose(fake, IN_DEV)
    assert not chosen.network
    assert "does not know" in chosen.reach_source and "docker:dind" in chosen.reach_source
    assert fake.calls.count("container_info") == 1  # one candidate, asked once


def test_a_hostname_that_is_another_containers_name_is_not_taken_for_this_one() -> None:
    fake = engine_knowing(info(cid=OTHER, name="/cafe12345678"))
    fake.infos = {"cafe12345678": info(cid=OTHER)}  # the engine answers a name with another ID
    assert not choose(fake, Clues(True, "", CGROUP_V2, "", "cafe12345678")).network


@pytest.mark.parametrize(
    ("settings", "why"),
    [
        ({"reach": "ports"}, "ENVKIT_REACH=ports"),
        ({"host": "docker-host"}, "the service host is set (ENVKIT_HOST)"),
    ],
)
def test_ports_when_asked_or_when_a_service_host_is_set(settings: dict[str, str], why: str) -> None:
    fake = engine_knowing(info())
    chosen = choose(fake, IN_DEV, **settings)
    assert not chosen.network and chosen.reach_source == why
    assert "container_info" not in fake.calls  # nothing is looked for


def test_a_host_in_the_stack_file_means_ports_too(tmp_path: Path) -> None:
    (tmp_path / "envkit.toml").write_text('[stack]\nname = "demo"\nhost = "docker-host"\n')
    config = load(tmp_path, environ={})
    fake = engine_knowing(info())
    chosen = detect(service_host(fake.endpoint, config, Settings()), fake, Settings(), IN_DEV)  # type: ignore[arg-type]
    assert not chosen.network and chosen.reach_source.startswith("the service host is set ([stack] host in")


def test_network_when_asked_even_with_a_service_host() -> None:
    chosen = choose(engine_knowing(info()), IN_DEV, reach="network", host="docker-host")
    assert chosen.network
    assert chosen.reach_source == "ENVKIT_REACH=network: this process runs in the container dev of the engine"


def test_network_asked_outside_a_container_is_an_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        choose(engine_knowing(), OUTSIDE, reach="network")
    assert "ENVKIT_REACH" in str(caught.value) and "outside any container" in str(caught.value)


def test_the_setting_is_validated() -> None:
    assert Settings.from_env({}).reach == "auto"
    assert Settings.from_env({"ENVKIT_REACH": " Network "}).reach == "network"
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"ENVKIT_REACH": "bridge"})
    assert "ENVKIT_REACH" in str(caught.value) and "auto, ports, network" in str(caught.value)


def test_a_container_on_the_hosts_network_uses_the_ports() -> None:
    chosen = choose(engine_knowing(info(mode="host")), IN_DEV)
    assert not chosen.network and "network mode host" in chosen.reach_source


def test_a_container_sharing_anothers_network_joins_through_that_one() -> None:
    """A devcontainer beside a compose service (network_mode: service:db): the container whose
    network it shares is the one to attach."""
    owner = info(cid=OTHER, name="/app-db-1")
    chosen = choose(engine_knowing(info(mode=f"container:{OTHER}"), owner), IN_DEV)
    assert chosen.client == ClientContainer(OTHER, "app-db-1")


# --- endpoints over the stack's network -----------------------------------------------------------

NETWORKED = dataclasses.replace(LOCAL, client=ClientContainer(ID, "dev"), reach_source="in dev")


def test_the_handle_gives_each_containers_name_and_the_container_port() -> None:
    h = StackHandle(stack="demo-1a2b3c4d", ports={"web": {8000: 40001}, "db": {5432: 40002}}, network=True)
    assert h.endpoint("web", 8000) == ("demo-1a2b3c4d-web", 8000)
    assert h.url("web", 8000) == "http://demo-1a2b3c4d-web:8000"
    assert h.env() == {
        "ENVKIT_DB_HOST": "demo-1a2b3c4d-db",
        "ENVKIT_DB_PORT_5432": "5432",
        "ENVKIT_WEB_HOST": "demo-1a2b3c4d-web",
        "ENVKIT_WEB_PORT_8000": "8000",
    }
    assert h.endpoints() == {
        "db": {"5432": "demo-1a2b3c4d-db:5432"},
        "web": {"8000": "demo-1a2b3c4d-web:8000"},
    }
    ports = StackHandle(stack="demo-1a2b3c4d", ports={"web": {8000: 40001}})
    assert ports.url("web", 8000) == "http://127.0.0.1:40001"  # through the ports, as before


def test_a_container_name_too_long_to_resolve_gives_way_to_the_service_alias() -> None:
    stack = "a" * 50 + "-1a2b3c4d"
    h = StackHandle(stack=stack, ports={"web": {80: 40001}, "webs": {81: 40002}}, network=True)
    assert h.endpoint("web", 80) == (f"{stack}-web", 80)  # 63 characters: one DNS label
    assert h.endpoint("webs", 81) == ("webs", 81)  # 64: the service's alias on the network


def test_the_handle_of_a_state_is_as_this_process_reaches_it() -> None:
    state = StackState(stack="s", project="p", root="/r", host="127.0.0.1")
    state.services["web"] = ServiceState(inputs="i", image="img", status="healthy", ports={"80": 40001})
    assert handle("s", state, NETWORKED).endpoint("web", 80) == ("s-web", 80)
    assert handle("s", state, LOCAL).endpoint("web", 80) == ("127.0.0.1", 40001)
    assert handle("s", state).endpoint("web", 80) == ("127.0.0.1", 40001)


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.asked += 1  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    """An HTTP server on 127.0.0.7 (standing in for a service's container on the network)."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.7", 0), _Ok)
    srv.asked = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


class Inspected:
    def __init__(self, ports: dict[str, int]) -> None:
        self.ports = ports
        self.inspects = 0

    def inspect_container(self, cid: str) -> ContainerDetails:
        self.inspects += 1
        return ContainerDetails("c1", True, None, "", None, "", self.ports)


def probe(engine: Inspected, port: int, address: str, timeout: float = 2.0) -> Any:
    spec = ServiceSpec(
        name="api",
        image="api",
        ports=(port,),
        environment={},
        command=None,
        depends_on=(),
        healthcheck=HealthCheck("http", path="/h", port=port),
        start_timeout=timeout,
    )
    return wait_healthy(
        engine,  # type: ignore[arg-type]
        spec,
        "c1",
        0.0,
        logs=lambda cid: [],
        clock=lambda: 0.0 if timeout else 1.0,
        sleep=lambda s: None,
        reach=NETWORKED,
        address=address,
    )


def test_a_health_check_over_the_network_probes_the_container_port_at_its_name(
    server: http.server.ThreadingHTTPServer,
) -> None:
    """The container port at the container's address, not the published port at the service host:
    the published port (1) leads nowhere, and the success needs no second look at it."""
    port = server.server_address[1]
    engine = Inspected({str(port): 1})
    assert probe(engine, port, "127.0.0.7") == {str(port): 1}  # the published ports, for the state
    assert server.asked == 1  # type: ignore[attr-defined]
    assert engine.inspects == 1  # no confirmation of a published port: there is none to compare


def test_a_name_that_does_not_resolve_on_the_network_names_envkit_reach() -> None:
    with pytest.raises(ServiceUnhealthy) as caught:
        probe(Inspected({"8000": 1}), 8000, "no-such-service.invalid", timeout=0.0)
    err = caught.value
    where = "the service's address no-such-service.invalid on the stack's network"
    assert f"{where} does not resolve" in err.reason
    assert "ENVKIT_REACH=ports" in err.fix and "dev" in err.fix


# --- the client's container on the stack's network -----------------------------------------------

STACK = '[stack]\nname = "demo"\n\n[services.web]\nimage = "nginx:1"\nports = [80]\n'


@pytest.fixture
def in_dev(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Stack, FakeDaemon]:
    monkeypatch.setattr(reaper, "spawn", lambda *args: True)
    monkeypatch.setattr(reaper, "running", lambda state_dir: True)
    monkeypatch.setattr(reach, "clues", lambda: IN_DEV)
    (tmp_path / "envkit.toml").write_text(STACK)
    fake = engine_knowing(info())
    stack = Stack(
        load(tmp_path, environ={}), fake, settings=Settings(warden=False, lock_timeout=5.0, grace=0.0)
    )  # type: ignore[arg-type]
    return stack, fake


def test_an_acquire_joins_the_clients_container_and_the_teardown_only_disconnects_it(
    in_dev: tuple[Stack, FakeDaemon],
) -> None:
    stack, fake = in_dev
    held = stack.acquire(["web"])
    (net,) = fake.networks_by_id
    assert fake.clients == {net: {ID}}
    assert held.handle.url("web", 80) == f"http://{stack.id}-web:80"
    info = stack.status()
    assert info["reach"] == "network" and info["client_container"] == {"id": ID, "name": "dev"}
    assert info["services"]["web"]["endpoints"] == {"80": f"{stack.id}-web:80"}
    assert info["network_clients"] == [ID]
    again = stack.acquire(["web"])  # a second process of the same container: already attached
    assert fake.calls.count("connect_network") == 1
    again.release()
    held.release()
    assert fake.networks_by_id == {} and fake.clients == {net: set()}  # disconnected, then removed
    assert "disconnect_network" in fake.calls
    assert fake.calls.count("remove_container") == 1  # web's: the client's container only left it


def test_a_teardown_without_the_disconnect_would_fail(in_dev: tuple[Stack, FakeDaemon]) -> None:
    """The fake refuses to remove a network with endpoints, as Docker does: the check above
    is meaningful."""
    stack, fake = in_dev
    held = stack.acquire(["web"])
    (net,) = fake.networks_by_id
    with pytest.raises(Exception, match="active endpoints"):
        fake.remove_network(net)
    held.release()
    assert fake.networks_by_id == {}


def test_a_client_outside_a_container_joins_nothing(
    monkeypatch: pytest.MonkeyPatch, in_dev: tuple[Stack, FakeDaemon]
) -> None:
    monkeypatch.setattr(reach, "clues", lambda: OUTSIDE)
    stack, fake = in_dev
    stack = Stack(stack.config, fake, settings=stack.settings)  # type: ignore[arg-type]
    held = stack.acquire(["web"])
    assert "connect_network" not in fake.calls and not any(fake.clients.values())
    port = next(iter(fake.containers_by_id.values())).ports["80"]
    assert held.handle.url("web", 80) == f"http://127.0.0.1:{port}"
    assert stack.status()["reach"] == "ports"
    held.release()


def test_a_remote_engine_whose_host_runs_the_client_container_is_reached_over_its_network() -> None:
    """A CI job container talking over tcp to its host's engine: the engine knows the container."""
    fake = engine_knowing(info())
    fake.endpoint = Endpoint("tcp://172.17.0.1:2375", "DOCKER_HOST")
    assert choose(fake, IN_DEV).network
