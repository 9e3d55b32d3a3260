"""A real registry for the remote-cache tests: Debian's ``docker-registry`` (distribution 2.8).

The session fixture ``registry`` starts one on 127.0.0.1 at a free port, with a config file of
its own and its storage in a temporary directory (never the package's default config, which
listens on every interface), and at the end stops it and removes that directory: whatever the
tests pushed goes with it. The Docker daemon trusts 127.0.0.0/8 registries over plain HTTP.
Each test pushes under a path of its own (its stack name), so tests never see each other's
entries.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


@dataclass
class Registry:
    """A running registry: ``host`` is ``127.0.0.1:PORT``."""

    host: str
    storage: Path

    def cache(self, path: str) -> str:
        """A cache (``REGISTRY/PATH``) in this registry."""
        return f"{self.host}/{path}"

    def tags(self, repository: str) -> list[str]:
        """The tags of ``repository`` (a path in this registry), asked of the registry itself."""
        try:
            with urllib.request.urlopen(f"http://{self.host}/v2/{repository}/tags/list", timeout=10) as r:
                return sorted(json.load(r).get("tags") or [])
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return []
            raise


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/v2/", timeout=1) as r:
            return r.status == 200
    except (OSError, urllib.error.URLError):
        return False


@contextlib.contextmanager
def running_registry(directory: Path) -> Iterator[Registry]:
    """A registry serving from ``directory`` (its config and storage), stopped and removed at the end."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail(
            "the remote-cache tests need Debian's docker-registry: apt-get install docker-registry",
            pytrace=False,
        )
    storage = directory / "storage"
    storage.mkdir(parents=True)
    proc: subprocess.Popen[bytes] | None = None
    try:
        for _ in range(5):  # the free port may be taken between the look and the bind: try again
            port = free_port()
            config = directory / "config.yml"
            config.write_text(CONFIG.format(storage=storage, port=port))
            proc = subprocess.Popen(
                [binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            deadline = time.monotonic() + 15
            while proc.poll() is None and time.monotonic() < deadline and not _answers(f"127.0.0.1:{port}"):
                time.sleep(0.05)
            if proc.poll() is None and _answers(f"127.0.0.1:{port}"):
                yield Registry(f"127.0.0.1:{port}", storage)
                return
            proc.kill()
            proc.wait()
        pytest.fail("docker-registry did not start (5 tries)", pytrace=False)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as the_registry:
        yield the_registry


@dataclass
class Silent:
    """A registry that does not answer: it accepts connections and never says a word.
    ``accepted`` counts the connections made to it."""

    host: str
    accepted: int = 0
    _socks: list[socket.socket] = field(default_factory=list)


@contextlib.contextmanager
def silent_registry() -> Iterator[Silent]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    silent = Silent(f"127.0.0.1:{server.getsockname()[1]}")
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            silent.accepted += 1
            silent._socks.append(conn)  # held open, unanswered, until the end

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield silent
    finally:
        stop.set()
        thread.join(5)
        for conn in silent._socks:
            conn.close()
        server.close()
