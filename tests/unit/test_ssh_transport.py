"""ssh:// engines (envkit/docker/ssh.py, SshTransport in transport.py): the address, the command
line, what a failure means, and the connections, through a fake ``ssh`` first on PATH that
speaks HTTP on its stdin and stdout as ``docker system dial-stdio`` does (or fails as ssh does)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil
import pytest

from envkit.docker import transport
from envkit.docker.ssh import SshError, SshTarget, failure
from envkit.docker.transport import Endpoint, SshTransport, TransportError, connect

FAKE_SSH = """#!{python}
import os, sys, time
mode = os.environ["FAKE_SSH_MODE"]
with open(os.environ["FAKE_SSH_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
if mode == "refused":
    sys.stderr.write("root@engine: Permission denied (publickey).\\n")
    sys.exit(255)
if mode == "silent":
    time.sleep(60)
inp, out = sys.stdin.buffer, sys.stdout.buffer
answered = 0
while True:
    line = inp.readline()
    if not line:
        sys.exit(0)
    length = 0
    while True:
        header = inp.readline()
        if header in (b"\\r\\n", b""):
            break
        if header.lower().startswith(b"content-length:"):
            length = int(header.split(b":")[1])
    inp.read(length)
    if mode == "once" and answered:
        time.sleep(60)
    answered += 1
    if line.startswith(b"GET /stream"):
        out.write(b"HTTP/1.1 200 OK\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n")
        for part in (b'{{"a": 1}}', b'{{"b": 2}}'):
            out.write(b"%x\\r\\n%s\\r\\n" % (len(part), part))
            out.flush()
        out.write(b"0\\r\\n\\r\\n")
    else:
        out.write(b"HTTP/1.1 200 OK\\r\\nApi-Version: 1.45\\r\\nContent-Length: 2\\r\\n\\r\\nOK")
    out.flush()
"""


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("ssh://engine", SshTarget("engine")),
        ("ssh://root@engine", SshTarget("engine", "root")),
        ("ssh://me@10.0.0.5:2222", SshTarget("10.0.0.5", "me", 2222)),
        ("ssh://me@[fd00::5]:22/", SshTarget("fd00::5", "me", 22)),
    ],
)
def test_the_address_is_read_as_docker_reads_it(url: str, target: SshTarget) -> None:
    assert SshTarget.parse(url) == target


@pytest.mark.parametrize(
    "url", ["ssh://", "ssh://engine/var/run/docker.sock", "ssh://engine:ssh", "tcp://engine"]
)
def test_an_address_that_is_not_ssh_is_refused_with_the_form(url: str) -> None:
    with pytest.raises(SshError, match=r"write ssh://\[user@\]host\[:port\]"):
        SshTarget.parse(url)


def test_the_command_is_the_docker_clis_and_never_asks() -> None:
    assert SshTarget("h", "me", 2222).command("/usr/bin/ssh") == [
        "/usr/bin/ssh", "-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
        "-l", "me", "-p", "2222", "--", "h", "docker", "system", "dial-stdio",
    ]  # fmt: skip
    assert SshTarget("h").command()[-5:] == ["--", "h", "docker", "system", "dial-stdio"]


@pytest.mark.parametrize(
    ("code", "stderr", "says"),
    [
        (255, "root@h: Permission denied (publickey).\n", "refused the login: root@h: Permission denied"),
        (
            255,
            "Warning: Permanently added 'h'\nHost key verification failed.\n",
            "cannot verify the host's key",
        ),
        (
            255,
            "ssh: Could not resolve hostname h: Name or service not known\n",
            "could not connect: ssh: Could",
        ),
        (255, "", "could not connect; fix:"),
        (127, "bash: line 1: docker: command not found\n", "has no docker command"),
        (1, "Cannot connect to the Docker daemon\n", "and it failed (exit 1)"),
    ],
)
def test_a_failure_says_what_ssh_said_and_the_fix(code: int, stderr: str, says: str) -> None:
    text = failure(SshTarget("h", "root"), code, stderr)
    assert text.startswith("ssh to root@h ")
    assert says in text
    assert "fix:" in text


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake ``ssh`` first on PATH; its log holds one line per process started."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "ssh"
    script.write_text(FAKE_SSH.format(python=sys.executable))
    script.chmod(0o755)
    log = tmp_path / "ssh.log"
    log.touch()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    monkeypatch.setenv("FAKE_SSH_MODE", "ok")
    return log


def fakes_running() -> list[psutil.Process]:
    me = psutil.Process()
    return [p for p in me.children(recursive=True) if "dial-stdio" in " ".join(p.cmdline())]


ENDPOINT = Endpoint("ssh://root@engine:2222", "DOCKER_HOST")


def test_connect_chooses_ssh_for_an_ssh_endpoint() -> None:
    chosen = connect(ENDPOINT)
    assert isinstance(chosen, SshTransport)
    assert chosen.target == SshTarget("engine", "root", 2222)


def test_requests_reuse_one_ssh_and_close_ends_it(fake_ssh: Path) -> None:
    ssh = SshTransport(ENDPOINT)
    for _ in range(3):
        with ssh.request("GET", "/_ping", timeout=5) as response:
            assert (response.status, response.read()) == (200, b"OK")
    with ssh.request("GET", "/stream", timeout=5) as response:
        assert b"".join(response.chunks()) == b'{"a": 1}{"b": 2}'
    assert fake_ssh.read_text().splitlines() == [
        "-T -o BatchMode=yes -o ConnectTimeout=10 -l root -p 2222 -- engine docker system dial-stdio"
    ]
    assert len(fakes_running()) == 1
    ssh.close()
    assert fakes_running() == []


def test_an_answer_not_read_to_its_end_closes_its_connection(fake_ssh: Path) -> None:
    ssh = SshTransport(ENDPOINT)
    response = ssh.request("GET", "/stream", timeout=5)
    response.close()
    with ssh.request("GET", "/_ping", timeout=5) as response:
        response.read()
    assert len(fake_ssh.read_text().splitlines()) == 2
    ssh.close()
    assert fakes_running() == []


def test_a_refused_login_is_ssh_s_reason(fake_ssh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SSH_MODE", "refused")
    with pytest.raises(TransportError) as caught:
        SshTransport(ENDPOINT).request("GET", "/_ping", timeout=5)
    assert not caught.value.timed_out
    assert (
        "ssh to root@engine refused the login: root@engine: Permission denied (publickey)."
        in caught.value.detail
    )
    assert fakes_running() == []


def test_a_silent_engine_is_a_timeout_on_a_new_connection_and_a_kept_one(
    fake_ssh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "LOGIN_TIMEOUT", 0.5)
    monkeypatch.setenv("FAKE_SSH_MODE", "silent")
    ssh = SshTransport(ENDPOINT)
    started = time.monotonic()
    with pytest.raises(TransportError) as caught:
        ssh.request("GET", "/_ping", timeout=0.5)
    assert caught.value.timed_out
    assert time.monotonic() - started < 3  # the call's bound and the login's allowance
    monkeypatch.setenv("FAKE_SSH_MODE", "once")
    with ssh.request("GET", "/_ping", timeout=5) as response:
        response.read()
    started = time.monotonic()
    with pytest.raises(TransportError) as caught:
        ssh.request("GET", "/_ping", timeout=0.5)  # the kept connection: the call's bound only
    assert caught.value.timed_out
    assert time.monotonic() - started < 1.5
    ssh.close()
    assert fakes_running() == []


def test_no_ssh_command_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(
        TransportError, match=r"need the ssh command .* install it \(apt-get install openssh-client\)"
    ):
        SshTransport(ENDPOINT).request("GET", "/_ping", timeout=5)
