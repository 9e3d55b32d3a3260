"""Every user-facing failure in envkit is an :class:`EnvkitError`.

Each subclass also inherits the matching built-in exception, carries its
evidence as attributes, and survives pickling (errors cross process
boundaries under pytest-xdist), which is why every ``__init__`` passes all of
its arguments on to ``super().__init__``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class EnvkitError(Exception):
    """Root of envkit's exceptions. ``str(err)`` is a complete message for a user."""


class ConfigError(EnvkitError, ValueError):
    """The stack file is invalid: names the file (and the line, when known), the key and the fix."""

    def __init__(self, file: Path | str, key: str, problem: str, fix: str, line: int | None = None) -> None:
        super().__init__(file, key, problem, fix, line)
        self.file = Path(file)
        self.key = key
        self.problem = problem
        self.fix = fix
        self.line = line

    def __str__(self) -> str:
        place = f"{self.file}:{self.line}" if self.line else str(self.file)
        where = f"{place}: {self.key}" if self.key else place
        return f"{where}: {self.problem}\n  fix: {self.fix}"


class DockerUnavailable(EnvkitError, ConnectionError):
    """The Docker daemon does not answer."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return (
            f"the Docker daemon does not answer ({self.detail}).\n"
            "  fix: start it, or choose a running engine (DOCKER_HOST, DOCKER_CONTEXT or "
            "`docker context use NAME`); `docker info` checks the connection"
        )


class StateError(EnvkitError, OSError):
    """envkit cannot write its own files (state directory, build locks). ``fix`` replaces the
    usual one when the failure calls for another."""

    def __init__(self, path: Path | str, detail: str, fix: str = "") -> None:
        # OSError keeps two arguments as args (a third would become its filename): ``fix``
        # crosses a pickle in the instance's __dict__, like every attribute.
        super().__init__(path, detail)
        self.path = Path(path)
        self.detail = detail
        self.fix = fix

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.detail}\n  fix: " + (
            self.fix
            or "make it writable, or point ENVKIT_STATE_DIR (state) or ENVKIT_LOCK_DIR "
            "(build locks) at a writable local directory"
        )


class StateCorrupt(StateError):
    """A file envkit keeps (the stack's state, a holder record) cannot be read back."""

    def __str__(self) -> str:
        return f"{self.path} is corrupt: {self.detail}\n  fix: " + (
            self.fix
            or "run the command again (envkit rebuilds the stack's state from its containers' "
            "labels under the lock), or stop the stack with `envkit down --all`"
        )


class StateDirUnsafe(StateError):
    """The state directory may be written by other users (it is world-writable, or not ours):
    they could plant holder files, a state, or links that envkit would write through."""

    def __str__(self) -> str:
        return (
            f"refusing the state directory {self.path}: {self.detail}\n"
            f"  fix: remove it (envkit makes a private one), or make it yours and private "
            f"(`chown $(id -u) {self.path} && chmod 700 {self.path}`, once you trust what it holds); "
            "or point ENVKIT_STATE_DIR at a directory of your own"
        )


class StateDirInUse(EnvkitError, RuntimeError):
    """The state directory already holds another stack, which still runs."""

    def __init__(self, path: Path | str, other: str, root: str, stack: str) -> None:
        super().__init__(path, other, root, stack)
        self.path = Path(path)
        self.other = other
        self.root = root
        self.stack = stack

    def __str__(self) -> str:
        where = f" (the project at {self.root})" if self.root else ""
        return (
            f"the state directory {self.path} already holds stack {self.other!r}{where}, which is "
            f"running; it cannot hold {self.stack!r} too\n"
            "  fix: give this project its own state directory (unset ENVKIT_STATE_DIR, or point it "
            f"elsewhere), or stop the other stack first (`envkit down --all` in {self.root or 'its project'})"
        )


class DaemonError(EnvkitError, RuntimeError):
    """The Docker daemon answered a request with an error, or went away mid-request.

    ``status`` is the HTTP status of the daemon's answer (409: a conflict, such
    as an image a container still uses), or None when no answer came.
    """

    def __init__(self, detail: str, status: int | None = None, timed_out: bool = False) -> None:
        super().__init__(detail, status, timed_out)
        self.detail = detail
        self.status = status
        self.timed_out = timed_out  # the daemon stopped answering (no answer: status is None)

    def __str__(self) -> str:
        return (
            f"the Docker daemon failed a request: {self.detail}\n"
            "  fix: check the daemon (`docker info`, its logs) and run the command again"
        )


class EngineNotFound(DaemonError, LookupError):
    """The engine has no such object (it answered 404)."""


class EngineConflict(DaemonError):
    """The engine refused a change that conflicts with what it holds (it answered 409: an image a
    container still uses, a name already taken)."""


class EngineUnreachable(DaemonError, ConnectionError):
    """No answer came: the engine could not be reached, or stopped answering mid-request."""


class EngineStreamError(DaemonError):
    """A build, pull, push or load reported an error in its stream (the request itself was
    answered: the operation failed on the engine). ``detail`` says which operation failed (and
    on what); ``reason`` is the engine's own message (``detail`` when none was given)."""

    def __init__(
        self, detail: str, status: int | None = None, timed_out: bool = False, *, reason: str = ""
    ) -> None:
        super().__init__(detail, status, timed_out)
        self.reason = reason or detail  # crosses a pickle in the instance's __dict__


def daemon_error(detail: str, status: int | None = None, timed_out: bool = False) -> DaemonError:
    """The typed :class:`DaemonError` for an engine's answer of ``status`` (None: no answer)."""
    kind = {None: EngineUnreachable, 404: EngineNotFound, 409: EngineConflict}.get(status, DaemonError)
    return kind(detail, status, timed_out)


class BaseImageError(EnvkitError, LookupError):
    """An external base image is missing and may not (``pull_failed`` False), or could not
    (``pull_failed`` True), be pulled."""

    def __init__(self, image: str, reference: str, detail: str, pull_failed: bool = False) -> None:
        super().__init__(image, reference, detail, pull_failed)
        self.image = image
        self.reference = reference
        self.detail = detail
        self.pull_failed = pull_failed

    def __str__(self) -> str:
        if self.pull_failed:
            fix = (
                f"make its registry reachable (`docker pull {self.reference}` shows why it is not), "
                "or make it present locally (`docker load`, `docker import`)"
            )
        else:
            fix = (
                "make it present locally (`docker load`, `docker import`, or a build), "
                "or allow pulling it with `--pull missing`"
            )
        return (
            f"image {self.image!r}: base image {self.reference!r} is not available: "
            f"{self.detail}\n  fix: {fix}"
        )


class BuildError(EnvkitError, RuntimeError):
    """``docker build`` failed; ``build_log`` holds the tail of its output."""

    def __init__(self, image: str, reason: str, build_log: Sequence[str] = (), fix: str = "") -> None:
        super().__init__(image, reason, list(build_log), fix)
        self.image = image
        self.reason = reason
        self.build_log = list(build_log)
        self.fix = fix

    def __str__(self) -> str:
        tail = "".join(f"\n  | {line}" for line in self.build_log)
        return (
            f"image {self.image!r} failed to build: {self.reason}"
            + (f"\n  last lines of the build log:{tail}" if tail else "")
            + (f"\n  fix: {self.fix}" if self.fix else "")
        )


class ImageMissing(EnvkitError, LookupError):
    """Images are not built, and building was turned off (``--envkit-no-build``)."""

    def __init__(self, images: Sequence[str], reason: str) -> None:
        super().__init__(list(images), reason)
        self.images = list(images)
        self.reason = reason

    def __str__(self) -> str:
        return (
            f"image{'s' if len(self.images) > 1 else ''} {', '.join(self.images)} "
            f"{'are' if len(self.images) > 1 else 'is'} not built ({self.reason}), "
            "and building is turned off\n"
            "  fix: build first (`envkit build` or `invoke build`), or drop --envkit-no-build"
        )


class ServiceUnhealthy(EnvkitError, RuntimeError):
    """A service did not become healthy in time (or its container stopped); carries its last log lines."""

    def __init__(
        self,
        service: str,
        check: str,
        seconds: float,
        reason: str,
        logs: Sequence[str] = (),
        *,
        fix: str = "",
    ) -> None:
        super().__init__(service, check, seconds, reason, list(logs))
        self.service = service
        self.check = check
        self.seconds = seconds
        self.reason = reason
        self.logs = list(logs)
        # Replaces the usual fix when the service is not at fault (an unreachable service host);
        # it crosses a pickle in the instance's __dict__.
        self.fix = fix

    def __str__(self) -> str:
        tail = "".join(f"\n  | {line}" for line in self.logs)
        return (
            f"service {self.service!r} did not become healthy: {self.reason} "
            f"(check: {self.check}; waited {self.seconds:.1f}s)"
            + (f"\n  last lines of its log:{tail}" if tail else "\n  (its log is empty)")
            + "\n  fix: "
            + (
                self.fix
                or "correct the service (its image, command or healthcheck), "
                "or raise its start_timeout if it is only slow"
            )
        )


class LockTimeout(EnvkitError, TimeoutError):
    """The stack's state lock stayed taken for too long; names who holds it."""

    def __init__(self, path: Path | str, seconds: float, holder: str) -> None:
        super().__init__(path, seconds, holder)
        self.path = Path(path)
        self.seconds = seconds
        self.holder = holder

    def __str__(self) -> str:
        return (
            f"waited {self.seconds:.0f}s for the stack lock {self.path}, held by {self.holder}\n"
            "  fix: wait for that process to finish (or stop it), or raise ENVKIT_LOCK_TIMEOUT"
        )


class StackStopped(EnvkitError, RuntimeError):
    """The stack was torn down (``envkit down --all``) while this process was starting it."""

    def __init__(self, stack: str) -> None:
        super().__init__(stack)
        self.stack = stack

    def __str__(self) -> str:
        return (
            f"stack {self.stack!r} was stopped (envkit down --all) while this process was starting it\n"
            "  fix: run again"
        )


class StackConflict(EnvkitError, RuntimeError):
    """The running stack was started from other inputs, and other processes still hold it."""

    def __init__(self, stack: str, changes: Sequence[str], holders: Sequence[str]) -> None:
        super().__init__(stack, list(changes), list(holders))
        self.stack = stack
        self.changes = list(changes)
        self.holders = list(holders)

    def __str__(self) -> str:
        changes = "".join(f"\n  - {c}" for c in self.changes)
        holders = "".join(f"\n  - {h}" for h in self.holders)
        return (
            f"stack {self.stack!r} is running with other inputs than this checkout's:{changes}\n"
            f"  and is still held by:{holders}\n"
            "  fix: wait for them to finish (envkit restarts it with the new inputs then), "
            "or stop it under them with `envkit down --all`"
        )


class EndpointError(EnvkitError, LookupError):
    """A handle was asked for a service or port that the stack does not publish."""

    def __init__(self, service: str, port: int | None, known: str) -> None:
        super().__init__(service, port, known)
        self.service = service
        self.port = port
        self.known = known

    def __str__(self) -> str:
        what = f"service {self.service!r}" + ("" if self.port is None else f" port {self.port}")
        return (
            f"{what} is not published by this stack (published: {self.known})\n"
            "  fix: list the port under the service's ports, and ask for the service when acquiring"
        )


class HookError(EnvkitError, RuntimeError):
    """``envkit hooks`` cannot do what was asked (no git work tree, a hook it did not install)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class PushError(EnvkitError, RuntimeError):
    """Images could not be pushed to the remote cache (they are built and tagged locally).

    ``failures`` holds one ``(reference, why)`` per image that was not pushed.
    """

    def __init__(self, cache: str, failures: Sequence[tuple[str, str]], fix: str) -> None:
        super().__init__(cache, [tuple(f) for f in failures], fix)
        self.cache = cache
        self.failures = [(str(ref), str(why)) for ref, why in failures]
        self.fix = fix

    def __str__(self) -> str:
        lines = "".join(f"\n  - {ref}: {why}" for ref, why in self.failures)
        return (
            f"{len(self.failures)} image{'s' if len(self.failures) != 1 else ''} not pushed to the "
            f"cache {self.cache} (the build itself finished: the images are here):{lines}\n"
            f"  fix: {self.fix}"
        )
