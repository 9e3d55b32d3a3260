"""How envkit reaches the daemon: the fast local-socket reads, docker-py elsewhere, and failures.

The engine is the tests' (tests/engine_client.py): the proxies here forward to it, and a test
that needs it on a local Unix socket skips on another."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Project
from engine_client import EngineFacts, engine_connector, engine_endpoint

from envkit.config.find import load
from envkit.docker.engine import Daemon
from envkit.errors import DockerUnavailable
from envkit.images.build import ensure

pytestmark = pytest.mark.docker


def one_image(project: Project) -> None:
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[images.app]\n')
    project.write("images/app/Dockerfile", f"FROM {project.base}\nCOPY . /app/\n")
    project.write("images/app/.dockerignore", "*.tmp\n")
    project.write("images/app/main.sh", "echo hi\n")


def test_a_no_op_build_never_imports_docker_py(project: Project, engine_facts: EngineFacts) -> None:
    """The no-op path reads the daemon over its socket: docker-py's import cost is not paid."""
    engine_facts.require("envkit speaks HTTP itself only on a local socket", local_socket=True)
    one_image(project)
    project.cli("build", "--quiet", check=True)
    script = (
        "import json, sys\n"
        "from envkit.cli import program\n"
        "program.run(['envkit', 'build', '--quiet'], exit=False)\n"
        "print(json.dumps(sorted(m for m in ('docker', 'requests', 'urllib3') if m in sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=project.root, env=project.env(), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
    # ... nor does a build that has work to do: envkit speaks the Engine API over the socket itself.
    project.write("images/app/main.sh", "echo changed\n")
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=project.root, env=project.env(), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
    built = json.loads(project.cli("build", "--json", check=True).stdout)
    assert [r["status"] for r in built] == ["cached"]  # the build above made the new key's image


def upstream() -> Callable[[], socket.socket]:
    """Opens a connection to the tests' engine; skips where a proxy cannot forward its bytes."""
    connector = engine_connector()
    if connector is None:
        pytest.skip(f"the engine at {engine_endpoint().host} is behind TLS or SSH: no byte proxy to it")
    return connector


@contextlib.contextmanager
def forwarding(server: socket.socket, connect: Callable[[], socket.socket]) -> Iterator[None]:
    """Every connection to the listening ``server`` forwarded to a new ``connect()``."""
    server.listen(16)
    stop = threading.Event()

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                s.close()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                engine = connect()
            except OSError:
                client.close()
                continue
            for a, b in ((client, engine), (engine, client)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        server.close()


@pytest.fixture
def tcp_proxy() -> Iterator[str]:
    """tcp://127.0.0.1:<engine-assigned port> forwarding to the tests' engine."""
    connect = upstream()
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    with forwarding(server, connect):
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"


@pytest.fixture
def engine_elsewhere(tmp_path: Path) -> Iterator[Path]:
    """Another path to the tests' engine, a Unix socket: a link to the engine's own socket, else a
    proxy to it. Unlinking the path leaves nothing there."""
    link = tmp_path / "elsewhere" / "engine.sock"
    link.parent.mkdir()
    path = engine_endpoint().socket_path
    if path is not None:
        link.symlink_to(path)
        yield link
        return
    connect = upstream()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(link))
    with forwarding(server, connect):
        yield link


def test_a_daemon_not_on_a_local_socket_goes_through_docker_py(project: Project, tcp_proxy: str) -> None:
    one_image(project)
    environ = {k: v for k, v in os.environ.items() if k not in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")}
    daemon = Daemon({**environ, "DOCKER_HOST": tcp_proxy})
    try:
        assert daemon.platform.startswith("linux/")
        assert [r.status for r in ensure(load(project.root), daemon)] == ["built"]
        assert [r.status for r in ensure(load(project.root), daemon)] == ["cached"]
        assert daemon.inspect_image(f"envkit-absent/{project.stack}:nope") is None
    finally:
        daemon.close()


@pytest.fixture
def silent_socket(tmp_path: Path) -> Iterator[str]:
    """A Unix socket that accepts connections and never answers."""
    path = tmp_path / "silent.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(16)
    yield f"unix://{path}"
    server.close()


@pytest.mark.parametrize("host", ["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:1", "silent"])
def test_an_unreachable_daemon_is_one_clear_error_within_two_seconds(
    project: Project, host: str, silent_socket: str
) -> None:
    host = silent_socket if host == "silent" else host
    started = time.monotonic()
    with pytest.raises(DockerUnavailable) as caught:
        Daemon({"DOCKER_HOST": host})
    assert time.monotonic() - started < 4  # the 2 s connect timeout, with room for a busy machine
    assert "docker info" in str(caught.value)

    one_image(project)
    env = {**project.env(), "DOCKER_HOST": host}
    proc = subprocess.run(
        [sys.executable, "-m", "envkit", "build"], cwd=project.root, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "envkit: error: the Docker daemon does not answer" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unwritable_state_dir_is_one_clear_error(project: Project) -> None:
    one_image(project)
    blocker = project.write("not-a-dir", "a file where the state dir should be\n")
    env = {**project.env(), "ENVKIT_STATE_DIR": str(blocker / "state")}
    proc = subprocess.run(
        [sys.executable, "-m", "envkit", "build"], cwd=project.root, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert f"envkit: error: cannot write {blocker / 'state'}" in proc.stderr
    assert "ENVKIT_STATE_DIR" in proc.stderr and "Traceback" not in proc.stderr


def test_the_platform_is_asked_once_per_daemon_and_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ping opens the connection; /version is asked once, then the user's cache answers."""
    environ = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    asked: list[str] = []
    real_json = Daemon._json

    def counting_json(self: Daemon, method: str, path: str, *args: object, **kwargs: object) -> object:
        asked.append(path)
        return real_json(self, method, path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Daemon, "_json", counting_json)
    first = Daemon(environ)
    assert asked == []  # construction only pings
    platform = first.platform
    assert platform.startswith("linux/") and asked == ["/version"]
    cached = json.loads((tmp_path / "cache" / "envkit" / "daemons.json").read_text())
    assert list(cached.values()) == [platform]

    second = Daemon(environ)
    assert second.platform == platform
    assert asked == ["/version"]  # answered from the cache

    # A cache entry made for another daemon (another Server header: endpoint|server|api) is not used.
    (tmp_path / "cache" / "envkit" / "daemons.json").write_text(
        json.dumps({k.replace("|", "|0.0-other-", 1): "linux/other" for k in cached})
    )
    third = Daemon(environ)
    assert third.platform == platform
    assert asked == ["/version", "/version"]


@pytest.mark.parametrize("how", ["current-context", "DOCKER_CONTEXT"])
def test_a_docker_context_chooses_the_engine_and_status_says_so(
    project: Project, tmp_path: Path, how: str, engine_elsewhere: Path
) -> None:
    """A context whose endpoint is another path to the real engine: envkit builds through it, and
    `envkit status` names the engine and why it was chosen."""
    import hashlib

    link = engine_elsewhere
    config_dir = tmp_path / "docker-config"
    meta = config_dir / "contexts" / "meta" / hashlib.sha256(b"elsewhere").hexdigest()
    meta.mkdir(parents=True)
    endpoint = {"Host": f"unix://{link}", "SkipTLSVerify": False}
    (meta / "meta.json").write_text(json.dumps({"Name": "elsewhere", "Endpoints": {"docker": endpoint}}))
    env = {k: v for k, v in project.env().items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
    env["DOCKER_CONFIG"] = str(config_dir)
    if how == "DOCKER_CONTEXT":
        env["DOCKER_CONTEXT"] = "elsewhere"
        (config_dir / "config.json").write_text(json.dumps({"currentContext": "default"}))
    else:
        (config_dir / "config.json").write_text(json.dumps({"currentContext": "elsewhere"}))
    one_image(project)

    def envkit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "envkit", *args], cwd=project.root, env=env, capture_output=True, text=True
        )

    built = envkit("build", "--json")
    assert built.returncode == 0, built.stderr
    assert [r["status"] for r in json.loads(built.stdout)] == ["built"]
    status = envkit("status", "--json")
    assert status.returncode == 0, status.stderr
    engine = json.loads(status.stdout)["engine"]
    assert engine["host"] == f"unix://{link}" and engine["context"] == "elsewhere"
    assert ("DOCKER_CONTEXT" if how == "DOCKER_CONTEXT" else "current context") in engine["source"]
    text = envkit("status").stdout
    assert f"engine: unix://{link} (from docker context 'elsewhere'" in text

    # A context that points nowhere is one clear error, not a fallback to the default socket.
    link.unlink()
    broken = envkit("build")
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    assert "does not answer" in broken.stderr and "docker context 'elsewhere'" in broken.stderr
