"""Fixtures shared by every test tier.

Integration tests use the real Docker daemon. Nothing can be pulled here, so
the one base image they build on is made from local material: a rootfs holding
the host's static busybox and its applet links, loaded with ``docker import``.
Everything a test creates carries envkit's labels and is removed at the end,
also when the test fails.

The engine is the one envkit itself would use (DOCKER_HOST, else DOCKER_CONTEXT,
else the docker CLI's current context, else the default socket): the tests'
own docker-py clients come from tests/engine_client.py, and ``engine_facts``
says what that engine can do, for the tests that depend on it.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from engine_client import EngineFacts, docker_api_client, engine_endpoint

from envkit.docker import labels
from envkit.docker.engine import Daemon
from envkit.errors import ConfigError, DockerUnavailable

BUSYBOX = Path("/bin/busybox")
# Every image the test session makes carries this label value (or a per-test one).
SESSION_STACK = f"envkit-tests-{uuid.uuid4().hex[:8]}"


def pytest_report_header(config: pytest.Config) -> str:
    try:
        endpoint = engine_endpoint()
    except ConfigError as err:
        return f"engine: none ({err})"
    return f"engine: {endpoint.host} (from {endpoint.source})"


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.APIClient]:
    try:
        daemon = Daemon()
    except DockerUnavailable as err:
        pytest.fail(f"integration tests need a running Docker daemon: {err}", pytrace=False)
    daemon.close()
    # docker-py's client, for the tests' own looks at the daemon (a second opinion on envkit's)
    client = docker_api_client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def engine_facts(docker_client: docker.APIClient, busybox_base: str) -> EngineFacts:
    """What the engine can do (tests/engine_client.py): tests that depend on it skip by
    capability, e.g. ``engine_facts.require("why", image_store="classic")``."""
    return EngineFacts(docker_client, busybox_base)


def busybox_rootfs_tar(files: Mapping[str, str] | None = None) -> bytes:
    """A rootfs tar: /bin/busybox plus a symlink per applet, /tmp, and ``files`` (path: text)."""
    if not BUSYBOX.is_file():
        pytest.fail("tests need Debian's busybox-static (/bin/busybox): apt-get install busybox-static")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for directory in ("bin", "tmp", "etc"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        tar.add(str(BUSYBOX), arcname="bin/busybox")
        for applet in applets.split():
            if applet == "busybox":
                continue
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
        for path, text in (files or {}).items():
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def import_busybox(
    client: docker.APIClient, repository: str, tag: str, stack: str, *, files: Mapping[str, str] | None = None
) -> str:
    """``docker import`` the busybox rootfs (with ``files``) as ``repository:tag``, labelled for
    ``stack``."""
    client.import_image_from_data(
        busybox_rootfs_tar(files),
        repository=repository,
        tag=tag,
        changes=[f"LABEL {labels.PROJECT}={stack}", "ENV PATH=/bin", 'CMD ["sh"]'],
    )
    return f"{repository}:{tag}"


def remove_stack_images(client: docker.APIClient, stack: str) -> None:
    """Remove every image labelled for ``stack`` (and nothing else), children first."""
    for _ in range(10):  # a parent with children cannot go before them: retry in passes
        images = [
            image
            for image in client.images(filters={"label": f"{labels.PROJECT}={stack}"})
            if (image.get("Labels") or {}).get(labels.PROJECT) == stack
        ]
        if not images:
            return
        for image in images:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                client.remove_image(image["Id"], force=True)
    raise AssertionError(f"could not remove the images of test stack {stack}")


@pytest.fixture(scope="session")
def busybox_base(docker_client: docker.APIClient) -> Iterator[str]:
    """A tiny external base image made from the host's busybox; removed at the end."""
    ref = import_busybox(docker_client, "envkit-test/busybox", SESSION_STACK, SESSION_STACK)
    yield ref
    remove_stack_images(docker_client, SESSION_STACK)


@dataclass
class Project:
    """A throwaway project on disk with its own stack name; see the ``project`` fixture."""

    root: Path
    stack: str
    base: str

    def write(self, relative: str, text: str, *, mode: int | None = None) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if mode is not None:
            path.chmod(mode)
        return path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENVKIT_")}
        env["ENVKIT_ROOT"] = str(self.root)
        return env

    def cli(self, *args: str, check: bool = False, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        """Run ``envkit ARGS`` in the project, as a user would."""
        proc = subprocess.run(
            [sys.executable, "-m", "envkit", *args],
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"envkit {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc


@pytest.fixture
def project(tmp_path: Path, docker_client: docker.APIClient, busybox_base: str) -> Iterator[Project]:
    """An empty project whose stack name is unique to this test; its images go at the end."""
    stack = f"t-{uuid.uuid4().hex[:10]}"
    root = tmp_path / "project"
    root.mkdir()
    yield Project(root=root, stack=stack, base=busybox_base)
    remove_stack_images(docker_client, stack)
    shutil.rmtree(root, ignore_errors=True)
