"""The tests' own docker-py client, for the engine envkit itself would use.

docker-py's ``APIClient()`` alone talks to ``/var/run/docker.sock`` whatever the
environment says; envkit finds its engine as the docker CLI does
(:func:`envkit.docker.transport.discover`: ``DOCKER_HOST``, else
``DOCKER_CONTEXT``, else the current context of ``$DOCKER_CONFIG/config.json``,
else the default socket). Every client the tests and benches make comes from
:func:`docker_api_client`, which asks that same discovery, so a run pointed at
another engine (``DOCKER_HOST=tcp://...``, a context) looks at the engine
envkit builds on and starts containers in.

:class:`EngineFacts` says what the engine can do (its image store, whether it
is Podman, the format of ``docker save``), for tests that depend on such a
property: they skip by capability, never by a version string.

This module needs only docker-py and envkit: the inner pytest sessions of
tests/integration (test_plugin, test_compose_project) copy it next to their
own modules and import it from there.
"""

from __future__ import annotations

import functools
import io
import os
import socket
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import pytest
from docker.tls import TLSConfig
from docker.utils import kwargs_from_env

from envkit.docker.transport import Endpoint, discover

FILE = Path(__file__)  # what the inner sessions copy
CONTAINERD_SNAPSHOTTER = ["driver-type", "io.containerd.snapshotter.v1"]  # GET /info DriverStatus


def engine_endpoint(environ: Mapping[str, str] | None = None) -> Endpoint:
    """The engine envkit would use with this environment (``os.environ`` by default)."""
    return discover(os.environ if environ is None else environ)


def docker_api_client(
    *,
    timeout: int | None = 60,
    version: str = "auto",
    environ: Mapping[str, str] | None = None,
) -> docker.APIClient:
    """A docker-py client for :func:`engine_endpoint`, as envkit connects to it.

    ``DOCKER_HOST`` comes with ``DOCKER_TLS_VERIFY`` and ``DOCKER_CERT_PATH`` (docker-py's
    ``kwargs_from_env``, as ``docker.from_env`` does); a context with its TLS material (``ca.pem``,
    ``cert.pem``, ``key.pem`` under ``contexts/tls``) and ``SkipTLSVerify``. ``ssh://`` needs
    paramiko, as it does for envkit.
    """
    env = dict(os.environ if environ is None else environ)
    endpoint = discover(env)
    kwargs: dict[str, Any]
    if endpoint.source == "DOCKER_HOST":
        kwargs = dict(kwargs_from_env(environment=env))
    else:
        kwargs = {"base_url": endpoint.host}
        if endpoint.tls_dir is not None:
            kwargs["tls"] = _context_tls(endpoint.tls_dir, verify=not endpoint.skip_tls_verify)
    kwargs["timeout"] = timeout  # seconds per request; None: no bound (docker-py allows it)
    return docker.APIClient(**kwargs, version=version)


def engine_connector(environ: Mapping[str, str] | None = None) -> Callable[[], socket.socket] | None:
    """A function that opens a plain byte stream to :func:`engine_endpoint` (its Unix socket, or
    TCP without TLS), for the tests' proxies; None for an engine behind TLS or SSH, whose bytes a
    proxy cannot forward as they are (a test that needs one skips)."""
    env = dict(os.environ if environ is None else environ)
    endpoint = discover(env)
    path = endpoint.socket_path
    if path is not None:

        def open_unix() -> socket.socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
            except OSError:
                sock.close()
                raise
            return sock

        return open_unix
    url = urlsplit(endpoint.host)
    if endpoint.source == "DOCKER_HOST":
        tls = "tls" in kwargs_from_env(environment=env)
    else:
        tls = endpoint.tls_dir is not None
    if url.scheme != "tcp" or tls or not url.hostname:
        return None
    address = (url.hostname, url.port or 2375)
    return lambda: socket.create_connection(address)


def _context_tls(directory: Path, *, verify: bool) -> TLSConfig:
    """A context's TLS material, read as envkit's transport reads it."""
    ca, cert, key = (directory / name for name in ("ca.pem", "cert.pem", "key.pem"))
    return TLSConfig(
        client_cert=(str(cert), str(key)) if cert.is_file() and key.is_file() else None,
        ca_cert=str(ca) if ca.is_file() else None,
        verify=verify,
    )


class EngineFacts:
    """What the engine the tests talk to can do, asked once (the ``engine_facts`` fixture).

    ``image_store``
        ``"containerd"`` when the engine keeps images in containerd's store (GET /info
        ``DriverStatus`` has ``driver-type: io.containerd.snapshotter.v1``): an image ID is the
        digest of its manifest or index; ``"containers-storage"`` on Podman and ``"classic"``
        (Docker's graph drivers) otherwise: an image ID is the digest of its config.
    ``podman``
        The engine is Podman's Docker-compatible service (GET /version ``Components``).
    ``endpoint``
        Where it is, and why (:func:`engine_endpoint`).
    ``local_socket``
        The engine is on a local Unix socket (envkit then speaks HTTP itself, without docker-py).
    ``forwardable``
        A proxy can forward its bytes as they are (Unix socket or TCP without TLS):
        :func:`engine_connector` opens the stream.
    ``save_writes_oci_layout``
        ``docker save`` writes an OCI image layout (``index.json``), not only the legacy
        ``manifest.json``: probed on first use by saving ``probe_image``, then remembered.
    """

    def __init__(self, client: docker.APIClient, probe_image: str, endpoint: Endpoint | None = None) -> None:
        self._client = client
        self._probe_image = probe_image
        self.endpoint = endpoint or engine_endpoint()
        info = client.info()
        version = client.version()
        status = [list(pair) for pair in info.get("DriverStatus") or []]
        components = [str(c.get("Name", "")) for c in version.get("Components") or []]
        self.podman = any("podman" in name.lower() for name in components)
        # the names envkit's EngineInfo gives: Podman keeps images in containers-storage
        if self.podman:
            self.image_store = "containers-storage"
        else:
            self.image_store = "containerd" if CONTAINERD_SNAPSHOTTER in status else "classic"
        self.server_version = str(version.get("Version", ""))  # for messages only: never compare it
        self.api_version = str(version.get("ApiVersion", ""))

    @property
    def local_socket(self) -> bool:
        return self.endpoint.socket_path is not None

    @property
    def forwardable(self) -> bool:
        return engine_connector() is not None

    @property
    def image_id_is_config_digest(self) -> bool:
        """An image's ID is the sha256 of its config bytes (not of a manifest or index)."""
        return self.image_store in ("classic", "containers-storage")

    @functools.cached_property
    def save_writes_oci_layout(self) -> bool:
        data = b"".join(self._client.get_image(self._probe_image))
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            names = {member.name.removeprefix("./") for member in tar.getmembers()}
        return "index.json" in names and "oci-layout" in names

    def describe(self) -> str:
        kind = "Podman" if self.podman else "Docker"
        return f"{kind} {self.server_version} (API {self.api_version}), image store: {self.image_store}"

    def require(self, reason: str, **wanted: object) -> None:
        """Skip the calling test unless every named fact has the wanted value, e.g.
        ``engine_facts.require("IDs are config digests", image_store="classic")``."""
        for name, value in wanted.items():
            have = getattr(self, name)
            if have != value:
                pytest.skip(f"{reason}: needs {name}={value!r}, the engine has {have!r} ({self.describe()})")

    def __repr__(self) -> str:
        return f"EngineFacts({self.describe()}, at {self.endpoint.host})"
