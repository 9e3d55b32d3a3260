"""The shared service stack with real holder processes and the real Docker daemon.

Every test gets a throwaway project (``stack_project``) whose stack has two
services on a busybox image: ``web`` (httpd on port 8000, serving /etc, so
``GET /hostname`` answers the container's hostname) and ``echo`` (``nc -e cat``
on port 9000, depending on ``web``). Holders are real processes
(``holder_proc.py``) that acquire the stack, print their endpoints, hold it
until their stdin closes and release it; their grace is 1 s (ENVKIT_GRACE).

Containers created are counted from the daemon's ``create`` events filtered by
the stack's label, so concurrent tests of other stacks do not interfere. The
fixture removes whatever a test leaves (and fails the test if it left
anything); holders are also killed in ``finally`` blocks.

Acceptance criteria of issue 3 covered here: 1 and 2 (16 concurrent holders,
one container per service, teardown within 10 s), 3 (kill -9 of one holder),
4 (kill -9 of every holder: the reaper within 15 s), 10 (keep and TTL) and 11
(ports on 127.0.0.1 only); plus partial stacks (``services=``) and the
handle's ``url()`` and ``env()``.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil
import pytest
from engine_client import EngineFacts

from envkit.docker import labels
from integration import events
from integration.stack_fixtures import StackProject, read_line, release

pytestmark = pytest.mark.docker

HOST = "127.0.0.1"
PATIENCE = 60.0  # seconds: a guard against hangs where the issue states no time limit


# --- helpers ---------------------------------------------------------------------------------


def creates(sp: StackProject, since: float, until: float) -> collections.Counter[str]:
    """Containers of this stack created between ``since`` and ``until``, counted per service."""
    creates = events.log().between(since, until, action="create", label=sp.label)
    return collections.Counter(str(event["Actor"]["Attributes"].get(labels.SERVICE)) for event in creates)


def container_ids(sp: StackProject) -> dict[str, str]:
    """Service -> id of its running container (fails if a service has more than one)."""
    ids: dict[str, str] = {}
    for c in sp.containers():
        service = c["Labels"][labels.SERVICE]
        assert service not in ids, f"two containers for service {service}: {sp.containers()}"
        assert c["State"] == "running", c
        ids[service] = c["Id"]
    return ids


def holder_files(sp: StackProject) -> list[str]:
    try:
        return sorted(os.listdir(sp.state_dir / "holders"))
    except FileNotFoundError:
        return []


def all_gone(sp: StackProject) -> bool:
    """No container, no network, no holder file of the stack."""
    return sp.gone() and not holder_files(sp)


def hold(sp: StackProject, *args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start a holder and wait until it holds; its process and JSON line (which must not be an error)."""
    proc = sp.holder(*args)
    line = read_line(proc)
    assert "error" not in line, line
    return proc, line


def release_ok(proc: subprocess.Popen[str]) -> None:
    code, err = release(proc)
    assert code == 0, f"holder {proc.pid} exited {code}:\n{err}"


def kill_all(procs: Iterable[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.communicate(timeout=10)


def web_port(line: dict[str, Any]) -> int:
    return int(line["ports"]["web"]["8000"])


def echo_port(line: dict[str, Any]) -> int:
    return int(line["ports"]["echo"]["9000"])


def get_hostname(port: int) -> str:
    """``GET /hostname`` from web: the hostname of the container that answered."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/hostname", timeout=10) as response:
        assert response.status == 200
        return str(response.read().decode().strip())


def echo_roundtrip(port: int, payload: bytes) -> bytes:
    """Send ``payload`` to echo and read as many bytes back."""
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(payload)
        received = b""
        while len(received) < len(payload):
            chunk = sock.recv(len(payload) - len(received))
            if not chunk:
                break
            received += chunk
    return received


def hostname_of(sp: StackProject, container: str) -> str:
    return str(sp.client.inspect_container(container)["Config"]["Hostname"])


def uses_the_stack(sp: StackProject, line: dict[str, Any], ids: dict[str, str]) -> None:
    """Through the holder's endpoints: web answers from its one container, echo echoes."""
    assert get_hostname(web_port(line)) == hostname_of(sp, ids["web"])
    payload = f"hello from holder {line['pid']}\n".encode()
    assert echo_roundtrip(echo_port(line), payload) == payload


def local_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses (not those of bridges other stacks come and go with)."""
    found = []
    for name, addresses in psutil.net_if_addrs().items():
        if name.startswith(("br-", "veth")):
            continue
        for address in addresses:
            if address.family == socket.AF_INET and not ipaddress.ip_address(address.address).is_loopback:
                found.append(address.address)
    return found


# --- 1, 2: many processes at once ------------------------------------------------------------


def test_sixteen_concurrent_holders_share_one_stack_and_the_last_one_out_tears_it_down(
    stack_project: StackProject,
) -> None:
    sp = stack_project
    since = time.time()
    start_at = time.time() + 3  # every holder is up and waiting by then: they acquire together
    procs = [sp.holder("--start-at", str(start_at)) for _ in range(16)]
    try:
        lines = [read_line(proc) for proc in procs]
        assert [line for line in lines if "error" in line] == []
        assert sorted(line["pid"] for line in lines) == sorted(proc.pid for proc in procs)

        # All 16 hold the stack at once, and all see the same endpoints: those of its containers.
        assert sp.live_holders() == 16
        assert len(holder_files(sp)) == 16
        ids = container_ids(sp)
        assert set(ids) == {"web", "echo"}
        published = {
            service: {
                port.split("/")[0]: int(bindings[0]["HostPort"])
                for port, bindings in sp.client.inspect_container(cid)["NetworkSettings"]["Ports"].items()
            }
            for service, cid in ids.items()
        }
        for line in lines:
            assert line["ports"] == published, line
            assert line["stack"] == sp.stack_id
        for line in lines:
            uses_the_stack(sp, line, ids)

        # Every holder leaves normally, all at about the same time.
        with ThreadPoolExecutor(max_workers=len(procs)) as pool:
            outcomes = list(pool.map(release, procs))
        for proc, (code, err) in zip(procs, outcomes, strict=True):
            assert code == 0, f"holder {proc.pid} exited {code}:\n{err}"
            assert "409" not in err and "Conflict" not in err, err

        # 2: within 10 s of the last exit, nothing is left: no container, network or holder.
        sp.wait_until(lambda: all_gone(sp) and sp.live_holders() == 0, 10, "the stack is torn down")
    finally:
        kill_all(procs)

    # Over the whole run exactly one container per service was ever created.
    assert creates(sp, since, time.time()) == {"web": 1, "echo": 1}
    sp.wait_until(lambda: not sp.reapers(), PATIENCE, "the reaper exits")


# --- 3, 4: holders that die without leaving --------------------------------------------------


def test_kill_9_of_one_holder_leaves_the_others_working(stack_project: StackProject) -> None:
    sp = stack_project
    procs: list[subprocess.Popen[str]] = []
    try:
        first, first_line = hold(sp)  # starts the stack (and its reaper)
        procs.append(first)
        others = [hold(sp) for _ in range(2)]
        procs.extend(proc for proc, _ in others)
        ids = container_ids(sp)
        assert sp.live_holders() == 3

        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=PATIENCE)
        sp.wait_until(lambda: sp.live_holders() == 2, PATIENCE, "the killed holder counts as dead")
        time.sleep(sp.grace + 2)  # longer than the grace plus the reaper's polling: it would have acted

        # The same containers still serve the remaining holders.
        assert container_ids(sp) == ids
        for _, line in others:
            assert line["ports"] == first_line["ports"]
            uses_the_stack(sp, line, ids)

        # The stack goes when the rest leave; the dead holder's file goes too.
        for proc, _ in others:
            release_ok(proc)
        sp.wait_until(lambda: all_gone(sp), PATIENCE, "the stack is torn down")
    finally:
        kill_all(procs)


def test_kill_9_of_every_holder_the_reaper_removes_everything_within_15_s(
    stack_project: StackProject,
) -> None:
    sp = stack_project
    start_at = time.time() + 2
    procs = [sp.holder("--start-at", str(start_at)) for _ in range(3)]
    try:
        lines = [read_line(proc) for proc in procs]
        assert [line for line in lines if "error" in line] == []
        assert set(container_ids(sp)) == {"web", "echo"}
        assert sp.live_holders() == 3
        assert sp.reapers(), "a reaper watches the stack"

        for proc in procs:  # all at once, none gets to release
            os.kill(proc.pid, signal.SIGKILL)
        for proc in procs:
            proc.wait(timeout=PATIENCE)
        assert [proc.returncode for proc in procs] == [-signal.SIGKILL] * 3
        sp.wait_until(lambda: all_gone(sp), 15, "the reaper removes the stack")
    finally:
        kill_all(procs)
    sp.wait_until(lambda: not sp.reapers(), PATIENCE, "the reaper exits")


# --- 10: keep and TTL ------------------------------------------------------------------------


def test_keep_leaves_the_stack_up_for_the_next_acquire_until_envkit_down(
    stack_project: StackProject,
) -> None:
    sp = stack_project
    procs: list[subprocess.Popen[str]] = []
    try:
        first, first_line = hold(sp, "--keep")
        procs.append(first)
        ids = container_ids(sp)
        release_ok(first)

        # Well past the grace (and the reaper's polling), the kept stack is still up.
        time.sleep(sp.grace + 2)
        assert container_ids(sp) == ids
        assert len(sp.networks()) == 1
        assert sp.live_holders() == 0

        # The next acquire attaches: no container is created, the same ones serve it.
        # It does not ask to keep the stack, yet keep was asked for since the stack
        # started, so the stack stays up after this holder, the last one, leaves.
        since = time.time()
        second, second_line = hold(sp)
        procs.append(second)
        assert creates(sp, since, time.time()) == {}
        assert container_ids(sp) == ids
        assert second_line["ports"] == first_line["ports"]
        uses_the_stack(sp, second_line, ids)
        release_ok(second)
        time.sleep(sp.grace + 2)

        # `envkit down` removes it.
        assert container_ids(sp) == ids
        down = sp.cli("down")
        assert down.returncode == 0, down.stdout + down.stderr
        assert all_gone(sp)
    finally:
        kill_all(procs)
    sp.wait_until(lambda: not sp.reapers(), PATIENCE, "the reaper exits")


def test_ttl_keeps_the_stack_warm_for_the_next_acquire_then_it_goes(stack_project: StackProject) -> None:
    sp = stack_project
    procs: list[subprocess.Popen[str]] = []
    try:
        first, first_line = hold(sp, "--ttl", "15")
        procs.append(first)
        ids = container_ids(sp)
        release_ok(first)
        released = time.time()

        # The next holder is started now and acquires once the grace alone would have ended the stack.
        second = sp.holder("--ttl", "3", "--start-at", str(released + sp.grace + 2))
        procs.append(second)
        time.sleep(max(0.0, released + sp.grace + 1.5 - time.time()))
        assert container_ids(sp) == ids, "the stack is still up within its TTL"

        second_line = read_line(second)
        assert "error" not in second_line, second_line
        assert creates(sp, released, time.time()) == {}
        assert container_ids(sp) == ids
        assert second_line["ports"] == first_line["ports"]
        uses_the_stack(sp, second_line, ids)

        # After the second holder's TTL with no holder, the stack is gone.
        release_ok(second)
        sp.wait_until(lambda: all_gone(sp), 3 + PATIENCE, "the stack goes after its TTL")
    finally:
        kill_all(procs)
    sp.wait_until(lambda: not sp.reapers(), PATIENCE, "the reaper exits")


# --- 11: published ports ---------------------------------------------------------------------


def test_published_ports_listen_on_127_0_0_1_only(
    stack_project: StackProject, engine_facts: EngineFacts
) -> None:
    sp = stack_project
    procs: list[subprocess.Popen[str]] = []
    try:
        proc, line = hold(sp)
        procs.append(proc)
        ids = container_ids(sp)
        host_ports = []
        for service, port in (("web", 8000), ("echo", 9000)):
            info = sp.client.inspect_container(ids[service])
            key = f"{port}/tcp"
            configured = info["HostConfig"]["PortBindings"]
            assert list(configured) == [key]
            assert [b["HostIp"] for b in configured[key]] == [HOST]
            bindings = info["NetworkSettings"]["Ports"][key]
            if engine_facts.podman:  # Podman reports the port it picked as the one asked for
                assert [b["HostPort"] for b in configured[key]] == [b["HostPort"] for b in bindings]
            else:
                assert [b["HostPort"] for b in configured[key]] in ([""], ["0"]), "the engine picks the port"
            assert [b["HostIp"] for b in bindings] == [HOST], bindings
            host_port = int(bindings[0]["HostPort"])
            assert host_port > 0
            assert host_port == int(line["ports"][service][str(port)])
            host_ports.append(host_port)
        uses_the_stack(sp, line, ids)

        others = local_addresses()
        if not others:
            pytest.skip("this machine has no non-loopback IPv4 address to try the ports on")
        for address in others:
            for host_port in host_ports:
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection((address, host_port), timeout=5).close()
        release_ok(proc)
        sp.wait_until(lambda: all_gone(sp), PATIENCE, "the stack is torn down")
    finally:
        kill_all(procs)


# --- partial stacks, and the handle ----------------------------------------------------------

HANDLE_SCRIPT = """
import json
import envkit
with envkit.shared_stack(services=["web"]) as handle:
    print(json.dumps({
        "url": handle.url("web", 8000),
        "endpoint": list(handle.endpoint("web", 8000)),
        "env": handle.env(),
    }))
"""


def test_a_holder_of_some_services_starts_only_those_and_a_later_one_adds_more(
    stack_project: StackProject,
) -> None:
    sp = stack_project
    procs: list[subprocess.Popen[str]] = []
    try:
        web_holder, web_line = hold(sp, "--service", "web")
        procs.append(web_holder)
        assert list(web_line["ports"]) == ["web"]
        ids = container_ids(sp)
        assert list(ids) == ["web"], "only web runs"
        assert get_hostname(web_port(web_line)) == hostname_of(sp, ids["web"])
        port = web_port(web_line)
        assert web_line["env"] == {"ENVKIT_WEB_HOST": HOST, "ENVKIT_WEB_PORT_8000": str(port)}

        # The handle of `with envkit.shared_stack(...)` in another process.
        script = subprocess.run(
            [sys.executable, "-c", HANDLE_SCRIPT],
            cwd=sp.root,
            env=sp.env(),
            capture_output=True,
            text=True,
            timeout=PATIENCE,
        )
        assert script.returncode == 0, script.stderr
        handle = json.loads(script.stdout)
        assert handle["url"] == f"http://{HOST}:{port}"
        assert not handle["url"].endswith("/")
        assert handle["endpoint"] == [HOST, port]
        assert handle["env"]["ENVKIT_WEB_HOST"] == HOST
        assert handle["env"]["ENVKIT_WEB_PORT_8000"] == str(port)
        with urllib.request.urlopen(handle["url"] + "/hostname", timeout=10) as response:
            assert response.read().decode().strip() == hostname_of(sp, ids["web"])

        # A holder asking for echo adds it to the running stack; web is not recreated.
        since = time.time()
        echo_holder, echo_line = hold(sp, "--service", "echo")
        procs.append(echo_holder)
        assert creates(sp, since, time.time()) == {"echo": 1}
        both = container_ids(sp)
        assert set(both) == {"web", "echo"}
        assert both["web"] == ids["web"]
        assert echo_line["ports"]["web"] == web_line["ports"]["web"]
        uses_the_stack(sp, echo_line, both)
        assert echo_line["env"]["ENVKIT_ECHO_PORT_9000"] == str(echo_port(echo_line))

        release_ok(web_holder)
        release_ok(echo_holder)
        sp.wait_until(lambda: all_gone(sp), PATIENCE, "the stack is torn down")
    finally:
        kill_all(procs)
