"""Shared pieces for the shared-stack tests: a project with services, and holder processes.

``stack_project`` gives a throwaway project whose services run on an image
built from the session's busybox base. Its finalizer removes every container
and network labelled with the project's stack id and stops its reaper, also
when the test failed, then checks that nothing was left.

Holders are real processes running ``holder_proc.py``: each acquires the
stack, prints one JSON line (pid, endpoints, acquire seconds), holds it until
its stdin closes (or for ``--hold`` seconds) and releases it.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import psutil
from conftest import Project

from envkit.config.find import load
from envkit.docker import labels

HOLDER = Path(__file__).with_name("holder_proc.py")

# A web server and a plain TCP echo server, both from busybox.
DEFAULT_SERVICES = """
[services.web]
image = "bb"
ports = [8000]
command = ["httpd", "-f", "-p", "8000", "-h", "/etc"]
healthcheck = { http = "/hostname", port = 8000 }

[services.echo]
image = "bb"
ports = [9000]
command = ["nc", "-ll", "-p", "9000", "-e", "cat"]
healthcheck = { tcp = 9000 }
depends_on = ["web"]
"""


@dataclass
class StackProject:
    """A project with a stack file holding ``[services]``; see the ``stack_project`` fixture."""

    project: Project
    client: docker.APIClient
    grace: float = 1.0
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.project.root

    @property
    def state_dir(self) -> Path:
        return self.root / ".envkit"

    def write_stack(self, services: str = DEFAULT_SERVICES, extra_images: str = "") -> None:
        """(Re)write envkit.toml: image ``bb`` FROM the busybox base, plus ``services``."""
        self.project.write("images/bb/Dockerfile", f"FROM {self.project.base}\n")
        self.project.write(
            "envkit.toml",
            f'[stack]\nname = "{self.project.stack}"\npull = "never"\n\n'
            f"[images.bb]\n{extra_images}\n{services}",
        )

    @property
    def stack_id(self) -> str:
        return load(self.root, self.env()).id

    @property
    def label(self) -> str:
        return f"{labels.STACK}={self.stack_id}"

    def env(self, **extra: str) -> dict[str, str]:
        env = self.project.env()
        env["ENVKIT_GRACE"] = str(self.grace)
        # No warden (envkit.stack.warden) unless a test asks for one: on a remote engine its image
        # costs a Debian build per engine container; tests/integration/test_warden.py tests it.
        env["ENVKIT_WARDEN"] = "0"
        env.update(extra)
        return env

    def containers(self) -> list[dict[str, Any]]:
        """This stack's containers, in every state."""
        return list(self.client.containers(all=True, filters={"label": self.label}))

    def networks(self) -> list[dict[str, Any]]:
        return list(self.client.networks(filters={"label": self.label}))

    def live_holders(self) -> int:
        from envkit.stack import lease

        return sum(lease.is_alive(h, p) for h, p in lease.read_holders(self.state_dir))

    def cli(self, *args: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "envkit", *args],
            cwd=self.root,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def holder(self, *args: str, **env: str) -> subprocess.Popen[str]:
        """Start a holder process (``holder_proc.py ARGS``); it holds until its stdin closes."""
        proc = subprocess.Popen(
            [sys.executable, str(HOLDER), *args],
            cwd=self.root,
            env=self.env(**env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> float:
        """Poll ``condition`` until true; the seconds it took. Fails the test after ``timeout``."""
        start = time.monotonic()
        while not condition():
            if time.monotonic() - start > timeout:
                raise AssertionError(f"not within {timeout}s: {what}")
            time.sleep(0.1)
        return time.monotonic() - start

    def volumes(self) -> list[dict[str, Any]]:
        return list(self.client.volumes(filters={"label": self.label}).get("Volumes") or [])

    def gone(self) -> bool:
        return not self.containers() and not self.networks() and not self.volumes()

    def reapers(self) -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info["cmdline"] or []
            if "envkit.stack.reaper" in cmd and str(self.state_dir) in cmd:
                found.append(proc)
        return found

    def cleanup(self) -> list[str]:
        """Stop holders and reapers, remove what the stack left; returns what was left behind."""
        for proc in self.procs:
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        for reaper in self.reapers():
            with contextlib.suppress(psutil.Error):
                reaper.kill()
        left = []
        try:
            label = self.label
        except Exception:  # the stack file may be broken on purpose
            return left
        for c in self.client.containers(all=True, filters={"label": label}):
            left.append(f"container {c['Names']}")
            self.client.remove_container(c["Id"], force=True, v=True)
        for n in self.client.networks(filters={"label": label}):
            left.append(f"network {n['Name']}")
            self.client.remove_network(n["Id"])
        for v in self.client.volumes(filters={"label": label}).get("Volumes") or []:
            left.append(f"volume {v['Name']}")
            self.client.remove_volume(v["Name"], force=True)
        return left


def read_line(proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
    """The JSON line a holder prints once it holds the stack (fails with its stderr otherwise)."""
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        proc.kill()
        raise AssertionError(f"holder {proc.pid} printed nothing within {timeout}s")
    line = proc.stdout.readline()
    if not line:
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"holder {proc.pid} exited {proc.returncode} without holding:\n{err}")
    return dict(json.loads(line))


def release(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    """Close a holder's stdin so it releases and exits; its exit code and stderr."""
    _, err = proc.communicate(input="", timeout=timeout)
    return proc.returncode, err


@contextlib.contextmanager
def make_stack_project(project: Project, client: docker.APIClient) -> Iterator[StackProject]:
    sp = StackProject(project=project, client=client)
    sp.write_stack()
    try:
        yield sp
    finally:
        left = sp.cleanup()
    assert not left, f"the test left behind: {left}"
