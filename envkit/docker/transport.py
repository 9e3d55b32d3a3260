"""Which Docker engine to talk to, and the HTTP connection to it.

:func:`discover` finds the engine the way the docker CLI does: ``DOCKER_HOST``,
else ``DOCKER_CONTEXT``, else the ``currentContext`` of
``$DOCKER_CONFIG/config.json`` (``~/.docker`` by default), whose endpoint is
read from ``contexts/meta/<sha256 of the name>/meta.json``; else the default
socket. Docker Desktop, Colima, OrbStack, Rancher Desktop and Podman users
select their engine with a context, so this matters.

:func:`connect` chooses the transport once: a local Unix socket is spoken to
with ``http.client`` (no import of docker-py and requests, which cost more
than everything else a no-op build does); any other endpoint (``tcp://``
with or without TLS) goes through docker-py's session, which knows those; an
``ssh://`` endpoint is reached through the system's ``ssh`` command, as the
docker CLI reaches it (:mod:`envkit.docker.ssh`), with HTTP spoken by
``http.client`` and idle connections kept for the next request (a new one is
an ssh login). All give every request its own timeout, and all hand back a
:class:`Response` that the engine reads as a whole or as a stream.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import select
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from envkit.docker.ssh import LOGIN_TIMEOUT, SshError, SshProcess, SshTarget
from envkit.errors import ConfigError

DEFAULT_SOCKET = "/var/run/docker.sock"
DEFAULT_HOST = f"unix://{DEFAULT_SOCKET}"
_BLOCK = 1 << 16


@dataclass(frozen=True)
class Endpoint:
    """An engine's address and why it was chosen (``envkit status`` shows both)."""

    host: str  # unix:///var/run/docker.sock, tcp://host:2376, ssh://user@host
    source: str  # e.g. "DOCKER_HOST", "docker context 'colima' (DOCKER_CONTEXT)"
    context: str | None = None
    tls_dir: Path | None = None  # a context's TLS material (ca.pem, cert.pem, key.pem)
    skip_tls_verify: bool = False

    @property
    def socket_path(self) -> str | None:
        """The path of a local Unix socket endpoint, else None."""
        if self.host.startswith("unix://"):
            return self.host[len("unix://") :] or DEFAULT_SOCKET
        return None

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "source": self.source, "context": self.context}


def discover(environ: Mapping[str, str] | None = None) -> Endpoint:
    """The engine the docker CLI would use with this environment."""
    env = os.environ if environ is None else environ
    host = env.get("DOCKER_HOST", "").strip()
    if host:
        return Endpoint(host, "DOCKER_HOST")
    config_dir = Path(env.get("DOCKER_CONFIG") or Path(env.get("HOME") or Path.home()) / ".docker")
    name = env.get("DOCKER_CONTEXT", "").strip()
    why = "DOCKER_CONTEXT"
    if not name:
        name = _current_context(config_dir / "config.json")
        why = f"the current context in {config_dir / 'config.json'}"
    if not name or name == "default":
        source = "the default socket" if not name else f"docker context 'default' ({why})"
        return Endpoint(DEFAULT_HOST, source, context=name or None)
    return _context_endpoint(config_dir, name, why)


def _current_context(config_file: Path) -> str:
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ""
    except (OSError, ValueError) as err:
        raise ConfigError(
            config_file,
            "currentContext",
            f"the docker CLI's configuration cannot be read ({err})",
            "correct the file (`docker context use default` rewrites it), or set DOCKER_HOST",
        ) from None
    current = data.get("currentContext") if isinstance(data, dict) else None
    return current if isinstance(current, str) else ""


def _context_endpoint(config_dir: Path, name: str, why: str) -> Endpoint:
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta_file = config_dir / "contexts" / "meta" / digest / "meta.json"
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        docker_endpoint = meta["Endpoints"]["docker"]
        host = str(docker_endpoint["Host"])
    except FileNotFoundError:
        raise ConfigError(
            "environment",
            "DOCKER_CONTEXT" if why == "DOCKER_CONTEXT" else "currentContext",
            f"there is no docker context named {name!r} (chosen by {why}; looked for {meta_file})",
            "create it (`docker context create`), choose another (`docker context use NAME`), "
            "or set DOCKER_HOST",
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            meta_file,
            "Endpoints.docker.Host",
            f"docker context {name!r} has no usable endpoint ({type(err).__name__}: {err})",
            f"recreate it (`docker context rm {name}`, then `docker context create`), or set DOCKER_HOST",
        ) from None
    tls_dir = config_dir / "contexts" / "tls" / digest / "docker"
    return Endpoint(
        host,
        f"docker context {name!r} ({why})",
        context=name,
        tls_dir=tls_dir if tls_dir.is_dir() else None,
        skip_tls_verify=bool(docker_endpoint.get("SkipTLSVerify")),
    )


# --- responses ----------------------------------------------------------------------------------


class Response(Protocol):
    """One answer of the engine; read it whole or as a stream, and close it (or use ``with``)."""

    status: int

    @property
    def headers(self) -> Mapping[str, str]:
        """The response's headers, names in lower case."""

    def read(self) -> bytes:
        """The whole body (then the response is closed)."""

    def chunks(self) -> Iterator[bytes]:
        """The body as it arrives; each read waits at most the request's timeout."""

    def close(self) -> None:
        """Let go of the connection. Idempotent."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...


class TransportError(Exception):
    """The engine could not be reached, or stopped answering (``timed_out``)."""

    def __init__(self, detail: str, *, timed_out: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.timed_out = timed_out


class Transport(Protocol):
    endpoint: Endpoint

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | Any | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None,
    ) -> Response:
        """Send a request (``path`` with its query); the response before its body is read.
        ``timeout`` bounds every wait for the engine (None: no bound)."""

    def close(self) -> None: ...


def connect(endpoint: Endpoint, environ: Mapping[str, str] | None = None) -> Transport:
    """The transport for ``endpoint``: ``http.client`` on a local socket and through ``ssh``,
    docker-py otherwise."""
    path = endpoint.socket_path
    if path is not None:
        return UnixTransport(endpoint, path)
    if endpoint.host.startswith("ssh://"):
        return SshTransport(endpoint)
    return DockerPyTransport(endpoint, environ)


# --- a local Unix socket: http.client -------------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout, blocksize=_BLOCK)
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


class _HTTPClientResponse:
    """An ``http.client`` answer. With ``release``, a connection whose answer was read to its end
    (and that the engine keeps open) is handed back for the next request instead of closed."""

    def __init__(
        self,
        conn: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        *,
        release: Callable[[Any], None] | None = None,
        error: Callable[[BaseException], TransportError] | None = None,
    ) -> None:
        self._conn = conn
        self._response = response
        self._release = release
        self._error = error or _transport_error
        self._done = False
        self._closed = False
        self.status = response.status
        self.headers = {k.lower(): v for k, v in response.getheaders()}

    def read(self) -> bytes:
        try:
            data = self._response.read()
            self._done = True
            return data
        except (OSError, http.client.HTTPException) as err:
            raise self._error(err) from None
        finally:
            self.close()

    def chunks(self) -> Iterator[bytes]:
        try:
            while True:
                data = self._response.read1(_BLOCK)
                if not data:
                    self._done = True
                    return
                yield data
        except (OSError, http.client.HTTPException) as err:
            raise self._error(err) from None
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._response.close()
        if self._release is not None and self._done and not self._response.will_close:
            self._release(self._conn)
        else:
            self._conn.close()

    def __enter__(self) -> _HTTPClientResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class UnixTransport:
    """Requests over a local Unix socket, a connection each (so threads never share one)."""

    def __init__(self, endpoint: Endpoint, path: str) -> None:
        self.endpoint = endpoint
        self.path = path

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | Any | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None,
    ) -> Response:
        conn = _UnixConnection(self.path, timeout)
        try:
            conn.request(method, path, body=body, headers={"Host": "docker", **(headers or {})})
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as err:
            conn.close()
            raise _transport_error(err, self.endpoint.host) from None
        return _HTTPClientResponse(conn, response)

    def close(self) -> None:
        pass


def _transport_error(err: BaseException, host: str = "") -> TransportError:
    where = f" at {host}" if host else ""
    if isinstance(err, TimeoutError):
        return TransportError(f"the engine{where} stopped answering", timed_out=True)
    text = str(err).strip().splitlines()
    return TransportError(f"cannot reach the engine{where}: {text[0] if text else type(err).__name__}")


# --- ssh://: the system's ssh command, as the docker CLI ----------------------------------------


class _SshConnection(http.client.HTTPConnection):
    """HTTP through one ``ssh ... docker system dial-stdio`` process."""

    def __init__(self, target: SshTarget, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout, blocksize=_BLOCK)
        self._target = target
        self.process: SshProcess | None = None

    def connect(self) -> None:
        self.process = SshProcess(self._target, self.timeout)
        self.sock = self.process.socket

    def reusable(self) -> bool:
        """Open, its ssh running, and nothing (not even an end) waiting to be read."""
        if self.sock is None or self.process is None or not self.process.alive():
            return False
        readable, _, _ = select.select([self.sock], [], [], 0)
        return not readable

    def explain(self, err: BaseException, host: str = "") -> TransportError:
        """The failure: ssh's own reason when it has ended, else what the socket saw."""
        if not isinstance(err, TimeoutError) and self.process is not None:
            reason = self.process.failure()
            if reason is not None:
                return TransportError(reason)
        return _transport_error(err, host)

    def close(self) -> None:
        super().close()
        if self.process is not None:
            self.process.close()


class SshTransport:
    """Requests through ``ssh`` processes; up to :attr:`KEEP` idle connections wait for the
    next request (a new connection is an ssh login: a fraction of a second, or more)."""

    KEEP = 4

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        try:
            self.target = SshTarget.parse(endpoint.host)
        except SshError as err:
            raise TransportError(str(err)) from None
        self._idle: list[_SshConnection] = []
        self._lock = threading.Lock()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | Any | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None,
    ) -> Response:
        conn = self._reused()
        fresh = conn is None
        if conn is None:  # the login comes before the engine can answer: it has its own allowance
            conn = _SshConnection(self.target, None if timeout is None else timeout + LOGIN_TIMEOUT)
        else:
            assert conn.sock is not None
            conn.sock.settimeout(timeout)
        try:
            conn.request(method, path, body=body, headers={"Host": "docker", **(headers or {})})
            response = conn.getresponse()
        except SshError as err:
            conn.close()
            raise TransportError(str(err)) from None
        except (OSError, http.client.HTTPException) as err:
            error = conn.explain(err, self.endpoint.host)
            conn.close()
            raise error from None
        if fresh and conn.sock is not None:
            conn.sock.settimeout(timeout)
        return _HTTPClientResponse(conn, response, release=self._release, error=conn.explain)

    def _reused(self) -> _SshConnection | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            if conn.reusable():
                return conn
            conn.close()

    def _release(self, conn: _SshConnection) -> None:
        with self._lock:
            if len(self._idle) < self.KEEP:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


# --- anything else: docker-py's session --------------------------------------------------------


class _RequestsResponse:
    def __init__(self, response: Any) -> None:
        self._response = response
        self.status = int(response.status_code)
        self.headers = {str(k).lower(): str(v) for k, v in response.headers.items()}

    def read(self) -> bytes:
        import requests

        try:
            return bytes(self._response.content)
        except requests.exceptions.RequestException as err:
            raise _requests_error(err) from None
        finally:
            self.close()

    def chunks(self) -> Iterator[bytes]:
        import requests

        try:
            for data in self._response.raw.stream(_BLOCK, decode_content=True):
                if data:
                    yield bytes(data)
        except (requests.exceptions.RequestException, OSError) as err:
            raise _requests_error(err) from None
        except Exception as err:  # urllib3's own errors (protocol, read timeout)
            if type(err).__module__.startswith("urllib3"):
                raise _requests_error(err) from None
            raise
        finally:
            self.close()

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> _RequestsResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _requests_error(err: BaseException) -> TransportError:
    timed_out = "timed out" in str(err).lower() or "timeout" in type(err).__name__.lower()
    if timed_out:
        return TransportError("the engine stopped answering", timed_out=True)
    text = str(err).strip().splitlines()
    return TransportError(f"cannot reach the engine: {text[0] if text else type(err).__name__}")


class DockerPyTransport:
    """Requests through docker-py's session: TCP (with TLS), or any other socket it knows."""

    def __init__(self, endpoint: Endpoint, environ: Mapping[str, str] | None = None) -> None:
        import docker
        from docker.errors import DockerException

        self.endpoint = endpoint
        kwargs: dict[str, Any] = {"base_url": endpoint.host}
        if endpoint.source == "DOCKER_HOST":
            from docker.utils import kwargs_from_env

            kwargs = dict(kwargs_from_env(environment=dict(os.environ if environ is None else environ)))
        elif endpoint.tls_dir is not None:
            kwargs["tls"] = _context_tls(endpoint.tls_dir, verify=not endpoint.skip_tls_verify)
        try:
            # The API version is given so that docker-py asks nothing at construction.
            self._client = docker.APIClient(**kwargs, version="1.25", timeout=60)
        except DockerException as err:
            raise TransportError(f"cannot use the engine at {endpoint.host}: {err}") from None

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | Any | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None,
    ) -> Response:
        import requests

        try:
            response = self._client.request(
                method,
                self._client.base_url + path,
                data=body,
                headers=dict(headers or {}),
                stream=True,
                timeout=timeout,
            )
        except requests.exceptions.RequestException as err:
            raise _requests_error(err) from None
        return _RequestsResponse(response)

    def close(self) -> None:
        self._client.close()


def _context_tls(directory: Path, *, verify: bool) -> Any:
    from docker.tls import TLSConfig

    ca, cert, key = (directory / name for name in ("ca.pem", "cert.pem", "key.pem"))
    return TLSConfig(
        client_cert=(str(cert), str(key)) if cert.is_file() and key.is_file() else None,
        ca_cert=str(ca) if ca.is_file() else None,
        verify=verify,  # without a ca.pem: the system's certificate authorities, as the docker CLI
    )


def registry_auth(reference: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The ``X-Registry-Auth`` header value for the registry of ``reference``, from the docker
    CLI's configuration and credential helpers (None when it has no credentials for it)."""
    from docker import auth
    from docker.errors import DockerException
    from docker.utils import parse_repository_tag

    env = dict(os.environ if environ is None else environ)
    repository, _ = parse_repository_tag(reference)
    try:
        registry, _ = auth.resolve_repository_name(repository)
        config = auth.load_config(config_path=None, credstore_env=env)
        found = auth.resolve_authconfig(config, registry, credstore_env=env)
    except (DockerException, OSError, ValueError) as err:  # a credential helper that fails
        raise TransportError(f"cannot read the docker CLI's credentials for {reference}: {err}") from None
    if not found:
        return None
    return base64.urlsafe_b64encode(json.dumps(found).encode()).decode()
