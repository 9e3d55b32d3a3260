"""The Docker daemon as envkit uses it, and the labels envkit puts on what it creates.

Every object envkit creates carries ``envkit.stack``; anything without it is
never touched.

:class:`Daemon` sends the reads that every ``envkit build`` makes (the daemon's
version, this stack's images, a base image's identity) straight to a local
Unix socket with ``http.client``, and imports docker-py only for real work
(builds, pulls, tags, removals) or for a daemon that is not on a local socket.
Importing docker-py and requests costs more than everything else a no-op build
does, so a no-op build never pays for it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from envkit.errors import DaemonError, DockerUnavailable, StateError
from envkit.fsutil import atomic_write_text, ensure_private_dir

if TYPE_CHECKING:
    import docker

LABEL_STACK = "envkit.stack"
LABEL_IMAGE = "envkit.image"
LABEL_KEY = "envkit.key"
LABEL_PROJECT = "envkit.project"  # the stack file's [stack] name
LABEL_SERVICE = "envkit.service"
LABEL_INPUTS = "envkit.inputs"  # hash of a service's config and image identity
LABEL_ROOT = "envkit.root"  # the checkout a stack belongs to

CONNECT_TIMEOUT = 2  # seconds
REQUEST_TIMEOUT = 300
DEFAULT_SOCKET = "/var/run/docker.sock"


class Daemon:
    """A connection to the daemon named by DOCKER_HOST (or the default socket).

    Construction pings the daemon and raises :class:`DockerUnavailable` within
    :data:`CONNECT_TIMEOUT` seconds when it does not answer.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = dict(os.environ if environ is None else environ)
        self._socket = _local_socket(self._environ)
        self._client: docker.APIClient | None = None
        self._client_lock = threading.Lock()  # build threads may ask for it at once
        self._platform: str | None = None
        self._server = ""
        if self._socket is None:
            info = self._connect_client()
            self.api_version = str(info["ApiVersion"])
            self._platform = _platform(info)
        else:
            try:
                headers = self._ping()
            except DaemonError as err:
                raise DockerUnavailable(err.detail) from None
            self.api_version = headers.get("Api-Version") or str(self._version()["ApiVersion"])
            self._server = headers.get("Server", "")

    @property
    def platform(self) -> str:
        """The platform an image is built for unless its entry sets one (``os/arch``).

        Asking ``/version`` costs more than a ping, so the answer is remembered
        per socket and daemon version in the user's cache.
        """
        if self._platform is None:
            cache = _PlatformCache(self._environ)
            key = f"{self._socket}|{self._server}|{self.api_version}"
            self._platform = cache.get(key) if self._server else None
            if self._platform is None:
                self._platform = _platform(self._version())
                if self._server:
                    cache.put(key, self._platform)
        return self._platform

    def _version(self) -> dict[str, Any]:
        return dict(self._get("/version"))

    def _ping(self) -> dict[str, str]:
        """GET /_ping within CONNECT_TIMEOUT; the response headers."""
        response, _ = self._request("/_ping", CONNECT_TIMEOUT)
        if response.status != 200:
            raise DaemonError(f"GET /_ping answered {response.status}")
        return {k.title(): v for k, v in response.getheaders()}

    @property
    def client(self) -> docker.APIClient:
        """docker-py's low-level client for this daemon, made on first use."""
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client(REQUEST_TIMEOUT, self.api_version)
            return self._client

    def images(self, label: str) -> list[dict[str, Any]]:
        """``docker images --filter label=LABEL`` (top-level images only)."""
        if self._socket is None:
            return list(self.client.images(filters={"label": label}))
        found = self._get("/images/json", {"filters": json.dumps({"label": [label]})})
        return list(found or [])

    def inspect_image(self, ref: str) -> dict[str, Any] | None:
        """``docker image inspect REF``, or None when there is no such image."""
        if self._socket is None:
            from docker.errors import ImageNotFound

            try:
                return dict(self.client.inspect_image(ref))  # type: ignore[no-untyped-call]
            except ImageNotFound:
                return None
        found = self._get(f"/images/{quote(ref, safe='/:@')}/json")
        return None if found is None else dict(found)

    def containers(self, label: str) -> list[dict[str, Any]]:
        """``docker ps --all --filter label=LABEL``."""
        if self._socket is None:
            return list(self.client.containers(all=True, filters={"label": label}))
        query = {"all": "1", "filters": json.dumps({"label": [label]})}
        return list(self._get("/containers/json", query) or [])

    def networks(self, label: str) -> list[dict[str, Any]]:
        """``docker network ls --filter label=LABEL``."""
        if self._socket is None:
            return list(self.client.networks(filters={"label": label}))
        return list(self._get("/networks", {"filters": json.dumps({"label": [label]})}) or [])

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def _make_client(self, timeout: int, version: str) -> docker.APIClient:
        import docker
        from docker.utils import kwargs_from_env

        kwargs = kwargs_from_env(environment=self._environ)
        return docker.APIClient(**kwargs, version=version, timeout=timeout)

    def _connect_client(self) -> dict[str, Any]:
        from docker.errors import DockerException

        try:
            self._client = self._make_client(CONNECT_TIMEOUT, "auto")
            info = dict(self._client.version(api_version=False))
        except DockerException as err:
            raise DockerUnavailable(_first_line(err)) from None
        self._client.timeout = REQUEST_TIMEOUT
        return info

    def _request(self, url: str, timeout: float) -> tuple[http.client.HTTPResponse, bytes]:
        """GET ``url`` over the local socket: the response and its body (DaemonError if unreachable)."""
        assert self._socket is not None
        conn = _UnixHTTPConnection(self._socket, timeout)
        try:
            conn.request("GET", url, headers={"Host": "docker"})
            response = conn.getresponse()
            return response, response.read()
        except (OSError, http.client.HTTPException) as err:
            raise DaemonError(
                f"cannot reach the daemon at unix://{self._socket}: {_first_line(err)}"
            ) from None
        finally:
            conn.close()

    def _get(
        self, path: str, query: Mapping[str, str] | None = None, *, timeout: float = REQUEST_TIMEOUT
    ) -> Any:
        """GET over the local socket; the decoded JSON, or None for a 404."""
        response, body = self._request(path + (f"?{urlencode(query)}" if query else ""), timeout)
        if response.status == 404:
            return None
        if response.status >= 400:
            raise DaemonError(
                f"GET {path} answered {response.status}: {_first_line(body.decode(errors='replace'))}"
            )
        return json.loads(body)


def _platform(info: Mapping[str, Any]) -> str:
    return f"{info.get('Os', 'linux')}/{info.get('Arch', 'amd64')}"


class _PlatformCache:
    """``daemons.json`` in the user's cache: daemon (socket, Server header, API) -> platform."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        cache = Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        self.path = cache / "envkit" / "daemons.json"

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def get(self, key: str) -> str | None:
        return self._read().get(key)

    def put(self, key: str, platform: str) -> None:
        data = self._read()
        data[key] = platform
        with contextlib.suppress(StateError):  # a cache: failing to write it changes nothing
            ensure_private_dir(self.path.parent)
            atomic_write_text(self.path, json.dumps(data, indent=1, sort_keys=True))


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _local_socket(environ: Mapping[str, str]) -> str | None:
    """The Unix socket DOCKER_HOST names (the default one when unset), or None."""
    host = environ.get("DOCKER_HOST", "")
    if not host:
        return DEFAULT_SOCKET
    if host.startswith("unix://"):
        return host[len("unix://") :] or DEFAULT_SOCKET
    return None


def release(err: Exception) -> None:
    """Close the HTTP response a docker-py error holds, so its connection is not leaked."""
    response = getattr(err, "response", None)
    if response is not None:
        response.close()


@contextmanager
def daemon_errors() -> Iterator[None]:
    """Turn docker-py's and requests' exceptions that escape envkit's own handling into DaemonError."""
    try:
        yield
    except Exception as err:
        if _from_docker_py(err):
            raise DaemonError(_first_line(err)) from None
        raise


def _from_docker_py(err: Exception) -> bool:
    if "docker" not in sys.modules:  # imported lazily: if it is not loaded, it raised nothing
        return False
    import requests
    from docker.errors import DockerException

    return isinstance(err, (DockerException, requests.exceptions.RequestException))


def _first_line(err: object) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
