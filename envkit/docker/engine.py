"""Every operation envkit makes on the Docker engine, typed, with one error translator.

:class:`Daemon` is the only way envkit talks to Docker. It speaks the Engine
API over the transport :mod:`envkit.docker.transport` chose, gives every call
a time bound (a call made under a stack's state lock must never outlast the
lock's timeout), and turns every failure into one of envkit's errors in one
place (:meth:`Daemon._call`): an answer of 400 or more is a
:class:`~envkit.errors.DaemonError` carrying the status, an engine that cannot
be reached or stops answering is one too, and every response is closed,
however its reading ends. Callers never see an HTTP library's exception.

The streams of builds, pulls, pushes and loads are read here, to their end (also after an
error: no connection is left half read): callers get a result (an image ID) and, through
callbacks, log or progress lines; an error the stream reports is an
:class:`~envkit.errors.EngineStreamError`. No caller reads a stream's messages.

Construction pings the engine and raises :class:`~envkit.errors.DockerUnavailable`
within :data:`CONNECT_TIMEOUT` seconds when it does not answer.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import functools
import json
import re
import struct
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ParamSpec, TypeVar
from urllib.parse import quote, urlencode

from envkit.docker.transport import (
    Endpoint,
    Response,
    Transport,
    TransportError,
    connect,
    discover,
    registry_auth,
)
from envkit.errors import (
    DaemonError,
    DockerUnavailable,
    EngineConflict,
    EngineStreamError,
    StateError,
    daemon_error,
)
from envkit.fsutil import atomic_write_text, ensure_private_dir

CONNECT_TIMEOUT = 2.0  # seconds for the first answer: a missing engine is reported at once
CALL_TIMEOUT = 60.0  # seconds any other call may wait for the engine (see Daemon.timeout)


@dataclass(frozen=True)
class Image:
    """An image as ``docker images`` lists it."""

    id: str
    tags: tuple[str, ...]
    labels: Mapping[str, str]


@dataclass(frozen=True)
class Container:
    """A container as ``docker ps --all`` lists it."""

    id: str
    name: str
    labels: Mapping[str, str]
    state: str  # "running", "exited", "created", ...
    status: str  # "Up 3 seconds (healthy)"
    image: str
    ports: Mapping[str, int] = field(default_factory=dict)  # container port -> host port (IPv4)
    created: float = 0.0  # when it was created (Unix time)
    networks: tuple[str, ...] = ()  # the networks it is attached to

    @property
    def exit_code(self) -> int | None:
        """The code it exited with (``Exited (0) 3 seconds ago``), or None while it has not."""
        if self.state != "exited" or not self.status.startswith("Exited ("):
            return None
        code = self.status[len("Exited (") :].split(")", 1)[0]
        return int(code) if code.lstrip("-").isdigit() else None

    def attached(self, network: str | None) -> bool:
        """Whether it is on ``network`` (a container on no recorded network is taken as attached)."""
        return network is None or network in self.networks

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def unhealthy(self) -> bool:
        """Docker's own health check (the image's HEALTHCHECK) calls it unhealthy."""
        return "(unhealthy)" in self.status


@dataclass(frozen=True)
class Volume:
    name: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class ContainerDetails:
    """What ``docker inspect`` says of a container that envkit waits on."""

    id: str
    running: bool
    exit_code: int | None
    error: str
    health: str | None  # Docker's health status, None when the image has no HEALTHCHECK
    health_output: str  # the last health check's output
    ports: Mapping[str, int]  # container port -> host port


@dataclass(frozen=True)
class Network:
    id: str
    name: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class ContainerSpec:
    """What envkit creates a service's container from."""

    name: str
    image: str
    command: Sequence[str] | None
    environment: Mapping[str, str]
    labels: Mapping[str, str]
    ports: Sequence[int]  # container ports, published on ``host`` at ports the engine picks
    network: str
    aliases: Sequence[str]
    host: str = "127.0.0.1"
    entrypoint: Sequence[str] | None = None
    user: str | None = None
    working_dir: str | None = None
    # (type, source, target, read only): type "volume" (source "" for an anonymous one),
    # "bind" (an absolute host path) or "tmpfs"
    mounts: Sequence[tuple[str, str, str, bool]] = ()
    stop_signal: str | None = None
    tty: bool = False
    stdin_open: bool = False
    no_healthcheck: bool = False  # the image's own HEALTHCHECK is turned off


@dataclass(frozen=True)
class ExecResult:
    exit_code: int | None
    output: str


_LOADED = re.compile(r"Loaded image(?: ID)?: (sha256:[0-9a-f]{64})")


@dataclass(frozen=True)
class EngineInfo:
    """The engine envkit talks to: what it is and how it keeps images.

    ``store`` is ``classic`` (Docker's graph drivers: an image's ID is the digest of its config),
    ``containerd`` (Docker's containerd image store: the ID is the manifest's digest) or
    ``containers-storage`` (Podman).
    """

    product: str  # "docker" or "podman"
    version: str
    api_version: str
    store: str

    @classmethod
    def from_answers(cls, version: Mapping[str, Any], info: Mapping[str, Any]) -> EngineInfo:
        components = [
            str(c.get("Name") or "") for c in version.get("Components") or [] if isinstance(c, dict)
        ]
        podman = any("podman" in name.lower() for name in components)
        if podman:
            store = "containers-storage"
        else:
            status = info.get("DriverStatus") or []
            snapshotter = any(
                isinstance(pair, list)
                and len(pair) == 2
                and pair[0] == "driver-type"
                and "snapshotter" in str(pair[1])
                for pair in status
            )
            store = "containerd" if snapshotter else "classic"
        return cls(
            product="podman" if podman else "docker",
            version=str(version.get("Version") or "?"),
            api_version=str(version.get("ApiVersion") or "?"),
            store=store,
        )

    def describe(self) -> str:
        name = "Podman" if self.product == "podman" else "Docker Engine"
        store = {"classic": "classic image store", "containerd": "containerd image store"}.get(
            self.store, self.store
        )
        return f"{name} {self.version} (API {self.api_version}, {store})"

    def to_json(self) -> dict[str, str]:
        return {
            "product": self.product,
            "version": self.version,
            "api_version": self.api_version,
            "store": self.store,
        }


class _Connection:
    """The connection to the engine and the one place where requests are made and their
    failures translated into envkit's errors. :class:`Daemon` adds the operations."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        endpoint: Endpoint | None = None,
        transport: Transport | None = None,
        cache_dir: Path | None = None,
        timeout: float = CALL_TIMEOUT,
    ) -> None:
        self._environ = environ
        self.endpoint = endpoint or (transport.endpoint if transport else discover(environ))
        self.timeout = timeout
        self._bounds = threading.local()  # per thread: the bound a `bounded` block sets
        self._cache_dir = cache_dir
        self._platform: str | None = None
        self._auths: dict[str, str | None] = {}  # registry -> X-Registry-Auth (read once each)
        self._auth_lock = threading.Lock()
        try:
            self._transport = transport or connect(self.endpoint, environ)
            with self._transport.request("GET", "/_ping", timeout=CONNECT_TIMEOUT) as response:
                ping_status = response.status
                headers = dict(response.headers)
        except TransportError as err:
            raise DockerUnavailable(f"{err.detail}; chosen by {self.endpoint.source}") from None
        if ping_status != 200:
            raise DockerUnavailable(f"GET /_ping at {self.endpoint.host} answered {ping_status}")
        self._server = headers.get("server", "")
        # Podman answers the ping as itself: it names local images localhost/<name>
        self.podman = "libpod-api-version" in {name.lower() for name in headers}
        self.api_version = headers.get("api-version") or str(
            self._json("GET", "/version", versioned=False)["ApiVersion"]
        )

    @contextlib.contextmanager
    def bounded(self, seconds: float) -> Iterator[None]:
        """Within the block, this thread's calls wait at most ``seconds`` for the engine (a
        caller holding a lock that others wait on, for less than that lock's timeout)."""
        outer = getattr(self._bounds, "seconds", None)
        self._bounds.seconds = seconds if outer is None else min(outer, seconds)
        try:
            yield
        finally:
            self._bounds.seconds = outer

    def current_bound(self) -> float | None:
        """The bound a `bounded` block set for this thread (to hand on to helper threads)."""
        bound: float | None = getattr(self._bounds, "seconds", None)
        return bound

    def _bound(self, timeout: float | None) -> float | None:
        inner = self.current_bound()
        if inner is None:
            return timeout
        return inner if timeout is None else min(timeout, inner)

    # -- the one place where requests are made and failures translated ------------------------------

    def _call(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | str | None = None,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | bool | None = True,
        versioned: bool = True,
        missing_ok: bool = False,
    ) -> Response:
        """Send a request; the response of a success (a 404 too with ``missing_ok``).

        Any other answer of 400 or more, and any transport failure, is a
        DaemonError naming the request; the response is closed either way.
        ``timeout=True`` means the daemon's own call timeout.
        """
        url = (f"/v{self.api_version}" if versioned else "") + path
        if query:
            url += "?" + (query if isinstance(query, str) else urlencode(query))
        data = body
        if body is not None and not hasattr(body, "read"):
            data = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        bound = self._bound(self.timeout if timeout is True else (None if timeout is False else timeout))
        try:
            response = self._transport.request(method, url, body=data, headers=headers, timeout=bound)
        except TransportError as err:
            raise daemon_error(_failed(method, path, err, bound), timed_out=err.timed_out) from None
        if response.status < 400 or (missing_ok and response.status == 404):
            return response
        text = self._read(response, path)
        raise daemon_error(f"{method} {path} answered {response.status}: {_message(text)}", response.status)

    def _read(self, response: Response, path: str) -> bytes:
        try:
            return response.read()
        except TransportError as err:
            raise daemon_error(_failed("reading", path, err, None), timed_out=err.timed_out) from None

    def _json(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | str | None = None,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | bool | None = True,
        versioned: bool = True,
        missing_ok: bool = False,
    ) -> Any:
        """A request whose answer is one JSON document (None for a 404 with ``missing_ok``,
        or for an empty body)."""
        with self._call(
            method,
            path,
            query,
            body=body,
            headers=headers,
            timeout=timeout,
            versioned=versioned,
            missing_ok=missing_ok,
        ) as response:
            if response.status == 404:
                return None
            text = self._read(response, path)
        try:
            return json.loads(text) if text.strip() else None
        except ValueError:
            raise DaemonError(f"{method} {path}: the answer is not JSON: {_message(text)}") from None

    def _stream(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | str | None = None,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None,
    ) -> Generator[dict[str, Any], None, None]:
        """A request whose answer is a stream of JSON messages, read to its end (or until the
        engine is silent for ``timeout`` seconds: a DaemonError)."""
        with self._call(method, path, query, body=body, headers=headers, timeout=timeout) as response:
            decoder = json.JSONDecoder()
            text = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span chunks
            buffer = ""
            try:
                for chunk in response.chunks():
                    buffer += text.decode(chunk)
                    while True:
                        buffer = buffer.lstrip()
                        if not buffer:
                            break
                        try:
                            message, end = decoder.raw_decode(buffer)
                        except ValueError:
                            break  # incomplete: wait for more
                        buffer = buffer[end:]
                        if isinstance(message, dict):
                            yield message
            except TransportError as err:
                raise daemon_error(
                    _failed(method, path, err, self._bound(timeout)), timed_out=err.timed_out
                ) from None


_T = TypeVar("_T")
_P = ParamSpec("_P")


def _answer_shape(method: Callable[_P, _T]) -> Callable[_P, _T]:
    """An answer of another shape than the Engine API's (a proxy's garbage, an engine that is
    not Docker's) is a DaemonError naming the operation, not a KeyError from deep inside."""

    @functools.wraps(method)
    def checked(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(*args, **kwargs)
        except (KeyError, TypeError, AttributeError) as err:
            raise DaemonError(
                f"{method.__name__}: the engine's answer is not what the Engine API says ({err!r})"
            ) from None

    return checked


class _Registries(_Connection):
    """What the engine does with registries for envkit: pull, push, and look up what a registry
    holds, each with the docker CLI's credentials for that registry (read once per registry)."""

    def pull(
        self, ref: str, *, stall: float | None, on_progress: Callable[[str], None] | None = None
    ) -> None:
        """``docker pull REF``, with the docker CLI's credentials for its registry, read to its
        end; each progress message that is not a byte count goes to ``on_progress`` as a line.

        A pull that fails in its stream is an :class:`~envkit.errors.EngineStreamError` naming
        ``ref`` (its ``reason``: the engine's message), raised once the stream has ended."""
        name, sep, digest = ref.partition("@")
        repository, tag = name, ""
        if not sep and ":" in name.rsplit("/", 1)[-1]:
            repository, tag = name.rsplit(":", 1)
        query = {"fromImage": repository, "tag": digest or tag or "latest"}
        auth = self._registry_auth(ref)
        headers = {"X-Registry-Auth": auth} if auth else {}
        messages = self._stream("POST", "/images/create", query, headers=headers, timeout=stall)
        failure = _read_to_end(messages, _progress(on_progress))
        if failure is not None:
            raise EngineStreamError(f"pulling {ref} failed: {failure}", reason=failure)

    @_answer_shape
    def distribution(self, ref: str, *, timeout: float) -> dict[str, Any] | None:
        """What the registry of ``ref`` holds under it (``GET /distribution/REF/json``: its
        descriptor), asked through the engine with the docker CLI's credentials; None when the
        registry answers that there is no such manifest or repository. Any other failure (a
        registry that does not answer, refuses the credentials) is a DaemonError."""
        auth = self._registry_auth(ref)
        headers = {"X-Registry-Auth": auth} if auth else None
        try:
            found = self._json(
                "GET", f"/distribution/{_path(ref)}/json", headers=headers, timeout=timeout, missing_ok=True
            )
        except DaemonError as err:
            # Engines and registries word "not there" differently (a 500 from some engines).
            if any(word in err.detail.lower() for word in _ABSENT):
                return None
            raise
        return None if found is None else dict(found)

    def push(
        self, ref: str, *, stall: float | None, on_progress: Callable[[str], None] | None = None
    ) -> None:
        """``docker push REF`` (a tagged reference), with the docker CLI's credentials, read to
        its end; each progress message that is not a byte count goes to ``on_progress``.

        A push that fails is an :class:`~envkit.errors.EngineStreamError` naming ``ref`` (the
        engine reports it in the stream, not in the status), raised once the stream has ended."""
        repository, _, tag = ref.rpartition(":")
        # The engine wants the header even without credentials: "{}" is "none".
        auth = self._registry_auth(ref) or base64.urlsafe_b64encode(b"{}").decode()
        path = f"/images/{_path(repository)}/push"
        messages = self._stream("POST", path, {"tag": tag}, headers={"X-Registry-Auth": auth}, timeout=stall)
        failure = _read_to_end(messages, _progress(on_progress))
        if failure is not None:
            raise EngineStreamError(f"pushing {ref} failed: {failure}", reason=failure)

    def _registry_auth(self, ref: str) -> str | None:
        """The ``X-Registry-Auth`` value for the registry of ``ref`` (None: no credentials), read
        once per registry: a credential helper is a process per call."""
        registry = ref.split("/", 1)[0] if _has_registry(ref) else "docker.io"
        with self._auth_lock:
            if registry not in self._auths:
                try:
                    self._auths[registry] = registry_auth(ref, self._environ)
                except TransportError as err:
                    raise DaemonError(err.detail) from None
            return self._auths[registry]


class _Images(_Registries):
    """What the engine does with images for envkit: list, inspect, tag and remove them; build,
    save and load them (the streams of builds and loads are read here, to their end)."""

    @_answer_shape
    def images(self, label: str) -> list[Image]:
        """``docker images --filter label=LABEL`` (top-level images only)."""
        found = self._json("GET", "/images/json", {"filters": _filters(label)}) or []
        return [
            Image(
                str(i["Id"]),
                tuple(self._local_name(t) for t in i.get("RepoTags") or ()),
                dict(i.get("Labels") or {}),
            )
            for i in found
        ]

    def _local_name(self, tag: str) -> str:
        """A tag as envkit wrote it (and as Docker lists it): Podman lists ``stack/app:key`` in
        full, as ``docker.io/stack/app:key`` when tagged through this API and as
        ``localhost/stack/app:key`` when tagged by its own command line."""
        if not self.podman:
            return tag
        for prefix in ("localhost/", "docker.io/library/", "docker.io/"):
            if tag.startswith(prefix):
                return tag[len(prefix) :]
        return tag

    @_answer_shape
    def inspect_image(self, ref: str) -> dict[str, Any] | None:
        """``docker image inspect REF``, or None when there is no such image."""
        found = self._json("GET", f"/images/{_path(ref)}/json", missing_ok=True)
        return None if found is None else dict(found)

    def image_labels(self, ref: str) -> dict[str, str] | None:
        """The labels of image ``ref`` (None when there is no such image)."""
        found = self.inspect_image(ref)
        return None if found is None else dict((found.get("Config") or {}).get("Labels") or {})

    def tag(self, image: str, reference: str) -> None:
        """``docker tag IMAGE REFERENCE``."""
        repository, _, tag = reference.rpartition(":")
        self._json("POST", f"/images/{_path(image)}/tag", {"repo": repository, "tag": tag})

    def remove_image(self, ref: str) -> None:
        """``docker rmi REF``; an :class:`~envkit.errors.EngineConflict` when a container still
        uses it."""
        self._json("DELETE", f"/images/{_path(ref)}", missing_ok=True)

    def build(
        self,
        context: IO[bytes],
        size: int,
        *,
        dockerfile: str,
        buildargs: Mapping[str, str],
        target: str | None,
        platform: str | None,
        stall: float | None,
        on_line: Callable[[str], None] | None = None,
        on_image: Callable[[str], None] | None = None,
    ) -> str | None:
        """Run the classic builder on a tar ``context`` and read its stream to the end: each
        non-empty line of its log goes to ``on_line``, the ID of the image it made to
        ``on_image`` as soon as the builder names it (``aux``); that ID, or None if it named none.

        A build that fails in its stream is an :class:`~envkit.errors.EngineStreamError` whose
        ``detail`` is the builder's message, raised once the stream has ended (so ``on_image``
        may have named an image the failed build made). A stall (no message for ``stall``
        seconds) is an :class:`~envkit.errors.EngineUnreachable` with ``timed_out`` set."""
        query: dict[str, str] = {
            "dockerfile": dockerfile,
            "buildargs": json.dumps(dict(buildargs)),
            "rm": "1",
            "forcerm": "1",
            "pull": "0",
        }
        if target:
            query["target"] = target
        if platform:
            query["platform"] = platform
        headers = {"Content-Type": "application/x-tar", "Content-Length": str(size)}
        made: str | None = None

        def each(message: Mapping[str, Any]) -> None:
            nonlocal made
            text = message.get("stream") or message.get("status")
            if text and on_line is not None:
                for line in str(text).splitlines():
                    if line.strip():
                        on_line(line)
            aux = message.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                made = str(aux["ID"])
                if on_image is not None:
                    on_image(made)

        messages = self._stream("POST", "/build", query, body=context, headers=headers, timeout=stall)
        failure = _read_to_end(messages, each)
        if failure is not None:
            raise EngineStreamError(failure)
        return made

    def history(self, ref: str) -> list[str]:
        """``docker history REF``: what made each layer (``CreatedBy``), newest first."""
        return [str(entry.get("CreatedBy") or "") for entry in self.history_entries(ref)]

    @_answer_shape
    def history_entries(self, ref: str) -> list[dict[str, Any]]:
        """``docker history REF`` as the engine answers it, newest first: ``Created`` (whole
        seconds), ``CreatedBy``, ``Comment`` and ``Size`` (its layer's, 0 for a step without one)."""
        found = self._json("GET", f"/images/{_path(ref)}/history") or []
        return [dict(entry) for entry in found]

    def create_idle(self, image: str, labels: Mapping[str, str]) -> str:
        """A container of ``image`` that is created and never started, for its files to be
        looked at (:meth:`container_archive`): its ID. The caller removes it."""
        body = {
            "Image": image,
            "Entrypoint": ["/envkit-never-started"],
            "Cmd": [],
            "WorkingDir": "/",  # else the engine makes the image's WorkingDir in it if missing
            "Labels": dict(labels),
            "NetworkDisabled": True,
            "HostConfig": {"NetworkMode": "none"},
        }
        created = self._json("POST", "/containers/create", body=body)
        return str(created["Id"])

    @_answer_shape
    def container_archive(self, cid: str, path: str) -> Generator[bytes, None, None]:
        """``docker cp CID:PATH -``: a tar of what is at ``path`` (a symlink there is not
        followed; the engine follows those above it), as it arrives; close it to stop early. An
        :class:`~envkit.errors.EngineNotFound` when nothing is there."""
        url = f"/containers/{_path(cid)}/archive"
        with self._call("GET", url, {"path": "/" + path.strip("/")}) as response:
            try:
                yield from response.chunks()
            except TransportError as err:
                raise daemon_error(_failed("GET", url, err, None), timed_out=err.timed_out) from None

    @_answer_shape
    def save(self, image: str, *, stall: float | None) -> Generator[bytes, None, None]:
        """``docker save IMAGE``: the image archive, in the layout the engine writes, as it arrives."""
        path = f"/images/{_path(image)}/get"
        with self._call("GET", path, timeout=stall) as response:
            try:
                yield from response.chunks()
            except TransportError as err:
                raise daemon_error(_failed("GET", path, err, stall), timed_out=err.timed_out) from None

    def load(self, archive: IO[bytes], size: int, *, stall: float | None) -> str | None:
        """``docker load`` of an image archive (see :mod:`envkit.images.archive`): the ID of the
        loaded image as the engine reports it (Docker: ``Loaded image ID: sha256:...``, on
        either image store; Podman: ``Loaded image: sha256:...``), or None if it names none.

        An error in the stream (or the containerd store's ``Error unpacking image`` line, which
        it sends instead of one) is an :class:`~envkit.errors.EngineStreamError`, raised once the
        stream has ended."""
        headers = {"Content-Type": "application/x-tar", "Content-Length": str(size)}
        loaded: str | None = None
        unpacking: list[str] = []  # the containerd store reports a failed unpack as text, not error

        def each(message: Mapping[str, Any]) -> None:
            nonlocal loaded
            text = str(message.get("stream") or "")
            found = _LOADED.search(text)
            if found:
                loaded = found.group(1)
            if text.lstrip().startswith("Error unpacking image"):
                unpacking.append(text.strip())

        messages = self._stream(
            "POST", "/images/load", {"quiet": "1"}, body=archive, headers=headers, timeout=stall
        )
        failure = _read_to_end(messages, each)
        if failure is None and unpacking:
            failure = unpacking[0]
        if failure is not None:
            raise EngineStreamError(f"docker load failed: {failure}", reason=failure)
        return loaded


class Daemon(_Images):
    """A connection to the Docker engine (see :func:`envkit.docker.transport.discover`).

    ``timeout`` bounds each call's wait for the engine; builds, pulls and
    imports take their own bound (a stall: no output for that long).
    """

    # -- the engine itself -------------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        return dict(self._json("GET", "/version", versioned=False))

    @property
    def platform(self) -> str:
        """The platform an image is built for unless its entry sets one (``os/arch``).

        Asking ``/version`` costs more than a ping, so the answer is remembered
        per endpoint and engine version in the user's cache.
        """
        if self._platform is None:
            cache = _PlatformCache(self._cache_dir, self._environ)
            key = f"{self.endpoint.host}|{self._server}|{self.api_version}"
            self._platform = cache.get(key) if self._server else None
            if self._platform is None:
                info = self.version()
                self._platform = f"{info.get('Os', 'linux')}/{info.get('Arch', 'amd64')}"
                if self._server:
                    cache.put(key, self._platform)
        return self._platform

    def close(self) -> None:
        self._transport.close()

    @functools.cached_property
    def engine(self) -> EngineInfo:
        """Which engine this is (Docker or Podman), its versions and its image store: asked once."""
        return EngineInfo.from_answers(self.version(), self._json("GET", "/info") or {})

    # -- containers --------------------------------------------------------------------------------

    @_answer_shape
    def containers(self, label: str) -> list[Container]:
        """``docker ps --all --filter label=LABEL``."""
        found = self._json("GET", "/containers/json", {"all": "1", "filters": _filters(label)}) or []
        return [
            Container(
                id=str(c["Id"]),
                name=str((c.get("Names") or ["/"])[0]).lstrip("/"),
                labels=dict(c.get("Labels") or {}),
                state=str(c.get("State") or ""),
                status=str(c.get("Status") or ""),
                image=str(c.get("Image") or ""),
                created=float(c.get("Created") or 0),
                networks=tuple(((c.get("NetworkSettings") or {}).get("Networks") or {}).keys()),
                ports={
                    str(p["PrivatePort"]): int(p["PublicPort"])
                    for p in c.get("Ports") or []
                    # the address publishing chose (loopback, every interface, one): IPv4's entry
                    if p.get("PublicPort") and ":" not in str(p.get("IP") or "")
                },
            )
            for c in found
        ]

    @_answer_shape
    def create_container(self, spec: ContainerSpec) -> str:
        """``docker create``: the new container's ID."""
        body: dict[str, Any] = {
            "Image": spec.image,
            "Cmd": list(spec.command) if spec.command else None,
            "Env": [f"{k}={v}" for k, v in spec.environment.items()],
            "Labels": dict(spec.labels),
            "ExposedPorts": {f"{p}/tcp": {} for p in spec.ports},
            "HostConfig": {
                "PortBindings": {f"{p}/tcp": [{"HostIp": spec.host, "HostPort": ""}] for p in spec.ports},
                "NetworkMode": spec.network,
                "Mounts": [
                    {
                        "Type": kind,
                        "Target": target,
                        "ReadOnly": read_only,
                        **({"Source": source} if source else {}),
                    }
                    for kind, source, target, read_only in spec.mounts
                ],
            },
            "NetworkingConfig": {"EndpointsConfig": {spec.network: {"Aliases": list(spec.aliases)}}},
            "Tty": spec.tty,
            "OpenStdin": spec.stdin_open,
        }
        if spec.no_healthcheck:
            body["Healthcheck"] = {"Test": ["NONE"]}
        if spec.entrypoint is not None:
            body["Entrypoint"] = list(spec.entrypoint)  # [] clears the image's
        for key, value in (
            ("User", spec.user),
            ("WorkingDir", spec.working_dir),
            ("StopSignal", spec.stop_signal),
        ):
            if value is not None:
                body[key] = value
        created = self._json("POST", "/containers/create", {"name": spec.name}, body=body)
        return str(created["Id"])

    def start_container(self, cid: str) -> None:
        self._json("POST", f"/containers/{_path(cid)}/start")

    def remove_container(self, cid: str) -> None:
        """``docker rm --force --volumes``; one that is already gone is no error.

        Docker kills a running container it is forced to remove; Podman first stops it
        gracefully, waiting out its stop timeout (10 s by default): so on Podman it is killed
        first (one that is not running, or gone, is no error)."""
        if self.podman:
            with contextlib.suppress(EngineConflict):
                self._json("POST", f"/containers/{_path(cid)}/kill", {"signal": "KILL"}, missing_ok=True)
        self._json("DELETE", f"/containers/{_path(cid)}", {"force": "1", "v": "1"}, missing_ok=True)

    @_answer_shape
    def inspect_container(self, cid: str) -> ContainerDetails | None:
        info = self._json("GET", f"/containers/{_path(cid)}/json", missing_ok=True)
        if info is None:
            return None
        state = info.get("State") or {}
        health = state.get("Health") or None
        log = (health or {}).get("Log") or []
        return ContainerDetails(
            id=str(info["Id"]),
            running=bool(state.get("Running")),
            exit_code=state.get("ExitCode"),
            error=str(state.get("Error") or ""),
            health=health.get("Status") if health else None,
            health_output=str(log[-1].get("Output") or "").strip() if log else "",
            ports=_bound_ports(info),
        )

    def logs(self, cid: str, tail: int) -> list[str]:
        """The last ``tail`` lines of a container's output (stdout and stderr)."""
        path = f"/containers/{_path(cid)}/logs"
        query = {"stdout": "1", "stderr": "1", "tail": str(tail)}
        with self._call("GET", path, query) as response:
            raw = _demux(self._read(response, path))
        return raw.decode(errors="replace").splitlines()[-tail:]

    @_answer_shape
    def exec_run(self, cid: str, cmd: Sequence[str], *, timeout: float) -> ExecResult:
        """Run ``cmd`` in the container and wait at most ``timeout`` seconds for it to end.

        A command that outlasts it is a DaemonError; no thread or connection of
        this process is left waiting on it.
        """
        deadline = time.monotonic() + timeout
        body = {"Cmd": list(cmd), "AttachStdout": True, "AttachStderr": True}
        created = self._json("POST", f"/containers/{_path(cid)}/exec", body=body, timeout=timeout)
        exec_id = _path(str(created["Id"]))
        start = {"Detach": False, "Tty": False}
        path = f"/exec/{exec_id}/start"
        late = DaemonError(f"the command {list(cmd)!r} did not finish within {timeout:g}s", timed_out=True)
        output = bytearray()
        with self._call("POST", path, body=start, timeout=max(0.1, deadline - time.monotonic())) as response:
            try:
                for chunk in response.chunks():  # each read waits at most what was left at the start
                    output += chunk
                    if time.monotonic() > deadline:  # a command that keeps talking, past its time
                        raise late
            except TransportError as err:
                raise (late if err.timed_out else DaemonError(_failed("POST", path, err, None))) from None
        info = self._json("GET", f"/exec/{exec_id}/json", timeout=timeout)
        return ExecResult(info.get("ExitCode"), _demux(bytes(output)).decode(errors="replace").strip())

    # -- networks ----------------------------------------------------------------------------------

    @_answer_shape
    def networks(self, label: str) -> list[Network]:
        found = self._json("GET", "/networks", {"filters": _filters(label)}) or []
        return [Network(str(n["Id"]), str(n["Name"]), dict(n.get("Labels") or {})) for n in found]

    @_answer_shape
    def create_network(self, name: str, labels: Mapping[str, str]) -> str:
        body = {"Name": name, "Driver": "bridge", "Labels": dict(labels), "CheckDuplicate": True}
        return str(self._json("POST", "/networks/create", body=body)["Id"])

    def remove_network(self, network_id: str) -> None:
        """``docker network rm``; one that is already gone is no error."""
        self._json("DELETE", f"/networks/{_path(network_id)}", missing_ok=True)

    # -- volumes -----------------------------------------------------------------------------------

    @_answer_shape
    def volumes(self, label: str) -> list[Volume]:
        """``docker volume ls --filter label=LABEL``."""
        found = (self._json("GET", "/volumes", {"filters": _filters(label)}) or {}).get("Volumes") or []
        return [Volume(str(v["Name"]), dict(v.get("Labels") or {})) for v in found]

    @_answer_shape
    def create_volume(self, name: str, labels: Mapping[str, str]) -> str:
        """``docker volume create`` (one of that name that exists is returned as it is)."""
        body = {"Name": name, "Driver": "local", "Labels": dict(labels)}
        return str(self._json("POST", "/volumes/create", body=body)["Name"])

    def remove_volume(self, name: str) -> None:
        """``docker volume rm --force``; one that is already gone is no error."""
        self._json("DELETE", f"/volumes/{_path(name)}", {"force": "1"}, missing_ok=True)

    # -- a client's own container on a stack's network (envkit.reach) ------------------------------

    def container_info(self, ref: str) -> dict[str, Any] | None:
        """``docker inspect`` of a container (by ID, ID prefix or name) as the engine answers it;
        None when the engine has no such container."""
        info = self._json("GET", f"/containers/{_path(ref)}/json", missing_ok=True)
        return dict(info) if isinstance(info, dict) else None

    @_answer_shape
    def network_members(self, network: str) -> dict[str, str]:
        """The containers attached to ``network`` (by ID or name): ID -> name; empty when it is gone."""
        info = self._json("GET", f"/networks/{_path(network)}", missing_ok=True) or {}
        members = info.get("Containers") or {}
        return {str(cid): str((member or {}).get("Name") or "") for cid, member in members.items()}

    def connect_network(self, network: str, container: str) -> None:
        """``docker network connect NETWORK CONTAINER``."""
        self._json("POST", f"/networks/{_path(network)}/connect", body={"Container": container})

    def disconnect_network(self, network: str, container: str) -> None:
        """``docker network disconnect --force NETWORK CONTAINER``; a network that is gone is no error."""
        body = {"Container": container, "Force": True}
        self._json("POST", f"/networks/{_path(network)}/disconnect", body=body, missing_ok=True)


def _failed(method: str, path: str, err: TransportError, timeout: float | None) -> str:
    if err.timed_out and timeout is not None:
        return f"{method} {path}: the engine did not answer within {timeout:g}s"
    return f"{method} {path}: {err.detail}"


def _stream_error(message: Mapping[str, Any]) -> str | None:
    """The error a stream's message reports (``errorDetail.message``, else ``error``), or None."""
    detail, error = message.get("errorDetail"), message.get("error")
    if not detail and not error:
        return None
    text = detail.get("message") if isinstance(detail, dict) else None
    return str(text or error or detail).strip() or "the engine reported an error without a message"


def _read_to_end(
    messages: Generator[dict[str, Any], None, None], each: Callable[[Mapping[str, Any]], None]
) -> str | None:
    """Hand every message of a stream to ``each`` and read it to its end (the engine ends it
    after an error; a connection left half read would leak); the first error the stream
    reported, or None. The stream is closed however its reading ends. A failure of the request
    itself (the engine went away or stalled) is raised, unless the stream had already reported
    an error: that error is the cause, and the one returned."""
    failure: str | None = None
    with contextlib.closing(messages):
        try:
            for message in messages:
                error = _stream_error(message)
                if error is not None:
                    failure = failure or error
                else:
                    each(message)
        except DaemonError:
            if failure is None:
                raise
    return failure


def _progress(on_progress: Callable[[str], None] | None) -> Callable[[Mapping[str, Any]], None]:
    """What hands a pull's or a push's messages to ``on_progress`` as lines."""

    def each(message: Mapping[str, Any]) -> None:
        if on_progress is not None and (line := _progress_line(message)):
            on_progress(line)

    return each


def _progress_line(message: Mapping[str, Any]) -> str:
    """A pull's or a push's message as a log line; "" for byte counts (the live view shows the
    last line, and a line per chunk would drown the plain output)."""
    status = str(message.get("status") or "")
    if not status or (message.get("progressDetail") or {}).get("current"):
        return ""
    ident = message.get("id")
    return f"{ident}: {status}" if ident else status


def _message(body: bytes) -> str:
    text = body.decode(errors="replace").strip()
    with contextlib.suppress(ValueError, AttributeError):
        text = str(json.loads(text).get("message") or text)
    lines = text.splitlines()
    return lines[0] if lines else "(no message)"


# How a registry (through the engine) says that a reference is not there.
_ABSENT = ("manifest unknown", "name unknown", "not found")


def _has_registry(ref: str) -> bool:
    """Whether ``ref`` starts with a registry host (``ghcr.io/...``, ``127.0.0.1:5000/...``),
    as Docker decides it: a first component with a dot, a port, or ``localhost``."""
    first, sep, _ = ref.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


def _filters(label: str) -> str:
    return json.dumps({"label": [label]})


def _path(part: str) -> str:
    return quote(part, safe="/:@")


def _bound_ports(info: Mapping[str, Any]) -> dict[str, int]:
    """Container port -> host port, from ``docker inspect`` of a started container."""
    ports = {}
    for key, bindings in ((info.get("NetworkSettings") or {}).get("Ports") or {}).items():
        port, _, proto = key.partition("/")
        if proto != "tcp" or not bindings:
            continue
        for binding in bindings:
            with contextlib.suppress(KeyError, ValueError, TypeError):
                ports[port] = int(binding["HostPort"])
                break
    return ports


def _demux(data: bytes) -> bytes:
    """The payload of Docker's multiplexed stream (8-byte frame headers), or ``data`` as is
    when it is not one (a container with a TTY)."""
    out: list[bytes] = []
    pos = 0
    while pos + 8 <= len(data):
        kind, size = data[pos], struct.unpack(">I", data[pos + 4 : pos + 8])[0]
        if kind not in (0, 1, 2) or data[pos + 1 : pos + 4] != b"\0\0\0":
            return data if pos == 0 else b"".join(out) + data[pos:]
        out.append(data[pos + 8 : pos + 8 + size])
        pos += 8 + size
    return b"".join(out) if pos else data


class _PlatformCache:
    """``daemons.json`` in the user's cache: engine (endpoint, Server header, API) -> platform."""

    def __init__(self, cache_dir: Path | None, environ: Mapping[str, str] | None) -> None:
        if cache_dir is None:
            from envkit.settings import Settings

            cache_dir = Settings.from_env(environ).cache_dir
        self.path = cache_dir / "daemons.json"

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
