"""One shared set of services for every process of a checkout.

:func:`shared_stack` (or :func:`acquire`) gives a process a *lease* on the
stack: the first one starts it, the others attach, the last to leave tears it
down (after a short grace, or after a TTL when asked to keep it warm), and a
detached reaper (:mod:`envkit.stack.reaper`) tears it down when every holder
has died without leaving.

acquire: the services' images are ensured (cached by key) -> under the state
lock: load the state (rebuilt from labels if need be), prune dead holders,
list the stack's containers once, and carry out what :func:`reconcile` decides
(remove dead containers and strays, replace what changed or refuse,
claim what is missing), register this holder -> unlock -> bring the services
up (:class:`~envkit.stack.launch.Launcher`) and wait until every wanted one is
healthy, whoever started it.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from envkit import faults
from envkit.config.find import load
from envkit.config.model import StackConfig
from envkit.docker.engine import Daemon
from envkit.errors import ConfigError, EnvkitError, StateCorrupt, StateDirInUse, StateError
from envkit.progress import Progress, Silent
from envkit.reach import detect
from envkit.remote import service_host
from envkit.settings import Settings
from envkit.stack import lease, reaper, warden
from envkit.stack.handle import StackHandle, handle
from envkit.stack.idle import Outcome, decide, mark_idle
from envkit.stack.launch import Launcher
from envkit.stack.objects import StackObjects, refuse_another
from envkit.stack.reconcile import reconcile
from envkit.stack.state import StackState, StateFile, recover
from envkit.stack.wanted import desired

log = logging.getLogger("envkit")


class Lease:
    """A process's hold on the stack. :meth:`release` is idempotent and also runs at exit."""

    def __init__(self, stack: Stack, registration: lease.Registration, handle: StackHandle) -> None:
        self.stack = stack
        self.registration = registration
        self.handle = handle
        self._released = False
        self._lock = threading.Lock()
        _ACTIVE.add(self)

    @property
    def holder(self) -> lease.Holder:
        return self.registration.holder

    def release(self, *, grace: float | None = None, keep: bool = False) -> Outcome:
        """Let go of the stack; what became of it. If no one else holds it, it stays up for
        ``grace`` seconds (ENVKIT_GRACE by default), or until `envkit down` with ``keep``, or
        for a TTL asked for when it was acquired; then it goes. A stack with a failed service
        goes at once, whatever ``keep`` says."""
        with self._lock:
            if self._released:
                return Outcome.ABSENT
            self._released = True
        _ACTIVE.discard(self)
        return self.stack.release(self.registration, grace=grace, keep=keep)


_ACTIVE: set[Lease] = set()
_HOOKS: list[bool] = []  # non-empty once the exit hooks are installed
WATCH = 2.0  # seconds between a holding process's looks at its stacks' reapers


def _watch_reapers() -> None:
    """While this process holds stacks: restart a reaper that died (the OOM killer, a cgroup
    kill), so that a stack is never left with no one to remove it."""
    while True:
        time.sleep(WATCH)
        for held in list(_ACTIVE):
            try:
                held.stack.revive_reaper()
            except (EnvkitError, OSError):  # the next look tries again; the lease is unaffected
                continue


def _release_all() -> None:
    """At exit: release what this process still holds; say so when that fails (the reaper then
    removes the stack once it sees that no holder is left)."""
    for active in list(_ACTIVE):
        try:
            active.release()
        except Exception as err:  # at exit nothing can be raised to: report, and go on
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            print(f"envkit: could not release stack {active.handle.stack} at exit: {first}", file=sys.stderr)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through `with shared_stack()`; atexit does the rest


def _install_exit_hooks() -> None:
    """Release leases at exit and on SIGTERM (SIGINT already raises KeyboardInterrupt)."""
    if _HOOKS:
        return
    _HOOKS.append(True)
    atexit.register(_release_all)
    threading.Thread(target=_watch_reapers, name="envkit-reaper-watch", daemon=True).start()
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _on_sigterm)


@contextlib.contextmanager
def shared_stack(
    root: Path | str | None = None,
    services: Sequence[str] | None = None,
    keep: bool = False,
    ttl: float | None = None,
    *,
    progress: Progress | None = None,
) -> Iterator[StackHandle]:
    """Hold the shared stack for the ``with`` block; yields its :class:`StackHandle`.

    ``services=None`` starts every service; otherwise those named and what they
    depend on. ``keep`` keeps the stack up after the last holder leaves (until
    ``envkit down``), ``ttl`` keeps it up that many seconds; ENVKIT_KEEP and
    ENVKIT_TTL set them when not passed.
    """
    held = acquire(root, services, keep, ttl, progress=progress)
    try:
        yield held.handle
    finally:
        held.release()


def acquire(
    root: Path | str | None = None,
    services: Sequence[str] | None = None,
    keep: bool = False,
    ttl: float | None = None,
    *,
    progress: Progress | None = None,
) -> Lease:
    """Take a lease on the shared stack (starting what is needed); release it with ``.release()``."""
    settings = Settings.from_env()
    keep, ttl = settings.stay(keep, ttl)
    if ttl is not None and ttl < 0:
        raise ConfigError("arguments", "ttl", f"{ttl} is negative", "pass a number of seconds >= 0")
    config = load(None if root is None else Path(root), settings=settings)
    stack = Stack(config, Daemon(cache_dir=settings.cache_dir), progress or Silent(), settings=settings)
    return stack.acquire(services, keep=keep, ttl=ttl)


FORCE_WAIT = 5.0  # seconds `envkit down --all` waits for the lock of a stopped owner before it goes ahead


@dataclasses.dataclass(frozen=True)
class Down:
    """What `envkit down` did."""

    removed: int  # containers removed
    holders: list[lease.Holder]  # the holders that held the stack
    lock_owner: str | None = None  # with --all: who held the state lock it did not wait for (stopped or gone)


def call_bound(settings: Settings) -> float:
    """How long an engine call made under the state lock may wait: half the lock's timeout."""
    return max(1.0, settings.lock_timeout / 2)


class Stack:
    """The shared stack of one checkout: acquire, release, down, and what they need."""

    def __init__(
        self,
        config: StackConfig,
        daemon: Daemon,
        progress: Progress | None = None,
        *,
        settings: Settings | None = None,
    ) -> None:
        self.config = config
        self.daemon = daemon
        self.progress = progress or Silent()
        self.settings = settings or Settings.from_env()
        self.id = config.id
        self.state_dir = config.state_dir
        self.state_file = StateFile(self.state_dir)
        self.objects = StackObjects(daemon, self.id, fault=self.settings.fault)
        # where the services are reached, and whether over the stack's network (asks the engine
        # only when this process runs in a container)
        self.reach = detect(service_host(daemon.endpoint, config, self.settings), daemon, self.settings)

    def wanted(self, services: Sequence[str] | None) -> list[str]:
        """The services to start, dependencies first: all of them, or ``services`` and their depends_on."""
        if services is None:
            return self.config.service_order()
        for name in services:
            if name not in self.config.services:
                raise ConfigError(
                    self.config.file,
                    f"services.{name}",
                    "no such service (this stack has: " + (", ".join(self.config.services) or "none") + ")",
                    "ask for a service declared under [services]",
                )
        return self.config.service_order(list(services))

    def acquire(
        self,
        services: Sequence[str] | None,
        *,
        keep: bool = False,
        ttl: float | None = None,
        session: lease.Holder | None = None,
        build: bool = True,
    ) -> Lease:
        """Hold the stack, starting what ``services`` need; see :func:`acquire`.

        ``session`` is a session pin (:func:`envkit.stack.lease.session_holder`)
        to register along with this holder unless it already is: the stack is
        then held for as long as that process lives, or until :meth:`end_session`.
        ``build=False`` fails with ImageMissing instead of building an image.
        """
        names = self.wanted(services)
        want = desired(
            self.config,
            self.daemon,
            names,
            progress=self.progress,
            settings=self.settings,
            build=build,
            publish=self.reach.publish,
        )
        holder = lease.new_holder("process", services=tuple(names), keep=keep, ttl=ttl)
        warden_tag = warden.image_for(self.reach, self.daemon, self.settings, self.id, self.progress)
        with self._locked():
            self._fault("acquire.locked")
            live, _ = lease.prune(self.state_dir)
            containers = self.objects.containers()
            actions = reconcile(
                self._load(live, containers),
                containers,
                live,
                want,
                holder.id,
                stack_id=self.id,
                project=self.config.name,
                root=str(self.config.root),
                dependents=self.config.dependents(),
            )
            for warning in actions.warnings:
                log.warning("envkit: %s", warning)
            if actions.replace:
                self.progress.note("stack", "replacing: " + "; ".join(actions.replace))
            self.objects.remove(actions.remove)
            state = actions.state
            if actions.network:
                state.network = self.id
            state.host, state.publish = self.reach.host, self.reach.publish  # the last acquire's word
            state.hold_keep = state.hold_keep or keep
            if ttl is not None:
                state.hold_ttl = max(ttl, state.hold_ttl or 0.0)
            if session is not None and not lease.holder_alive(self.state_dir, session.id):
                lease.register(self.state_dir, session)
            registration = lease.register(self.state_dir, holder)
            try:
                state.idle_since = state.idle_until = None
                state.idle_keep = False
                self.state_file.save(state)
                self._ensure_reaper()
                # Only now does anything new exist in Docker: this holder and the reaper are
                # responsible for it, so a kill at any moment from here leaves nothing behind.
                self._fault("acquire.registered")
                client = self.reach.client  # this process's container, when it joins the network
                if actions.network or client is not None:
                    self.objects.ensure_network(self.config.name)
                    self._fault("acquire.network")
                    if client is not None:
                        self.objects.join(client.id, client.name)
                started = warden.keep(self, state, warden_tag)  # a warden on the engine, if any
            except BaseException:
                registration.drop()
                raise
        _install_exit_hooks()
        try:
            warden.check(self, started)
            launcher = Launcher(
                self.config,
                self.daemon,
                me=holder.id,
                wanted=want,
                locked=self._locked,
                progress=self.progress,
                fault=self.settings.fault,
                reach=self.reach,
            )
            launcher.run(names)
            held = Lease(self, registration, handle(self.id, self.state_file.read(), self.reach))
        except BaseException:
            self.release(registration)
            raise
        return held

    @contextlib.contextmanager
    def _locked(self, timeout: float | None = None) -> Iterator[None]:
        """The state lock; the engine calls made while holding it are bounded by half its
        timeout, so a hung engine is an error before the processes waiting for it time out."""
        wait = self.settings.lock_timeout if timeout is None else timeout
        with lease.state_lock(self.state_dir, wait), self.daemon.bounded(call_bound(self.settings)):
            yield

    def _load(
        self, live: Sequence[lease.Holder], containers: Sequence[Any] | None = None
    ) -> StackState | None:
        """Under the lock: the state, rebuilt from the stack's labels when the file is missing or
        unreadable. None when there is no state and nothing of the stack runs.

        One state directory holds one stack: if it holds another stack that still runs (its
        containers, or live holders), that is :class:`StateDirInUse`, and nothing of it is touched.
        """
        problem = None
        try:
            state = self.state_file.read()
        except StateCorrupt as err:
            state, problem = None, f"is corrupt ({err.detail})"
        if state is not None:
            if state.stack == self.id:
                return state
            refuse_another(self.state_dir, state, self.id, bool(live), self.daemon)
            problem = f"describes stack {state.stack!r}, which no longer runs"
        found = self.objects.containers() if containers is None else list(containers)
        networks = self.objects.networks()
        if not found and not networks:
            if problem:
                log.warning("envkit: ignored the state file %s: it %s", self.state_file.path, problem)
                self.state_file.remove()
            return None
        log.warning(
            "envkit: the state file %s %s; rebuilt it from the labels of %d container(s) of stack %s",
            self.state_file.path,
            problem or "was missing",
            len(found),
            self.id,
        )
        return recover(self.id, found, networks)

    def _ensure_reaper(self) -> bool:
        """Start the detached reaper unless one watches this stack; whether one was started."""
        try:
            return reaper.spawn(self.state_dir, self.id, self.daemon.endpoint)
        except OSError as err:
            raise StateError(self.state_dir / reaper.LOG_FILE, f"cannot start the reaper: {err}") from None

    def _fault(self, phase: str) -> None:
        faults.reach(self.settings.fault, phase)

    def revive_reaper(self) -> bool:
        """Start a reaper if the stack is up and none watches it; whether one was started."""
        if reaper.running(self.state_dir) or not self.state_file.path.exists():
            return False
        return self._ensure_reaper()

    def _go_idle(self, state: StackState, leavers: list[lease.Holder], grace: float) -> Outcome:
        """No holder is left (under the lock): leave the stack up for a while, or tear it down."""
        now = time.time()
        decision = decide(state, leavers, grace, now)
        if decision.stop:
            self.objects.stop(self.state_file)
        else:
            mark_idle(state, decision, now)
            self.state_file.save(state)
            self._ensure_reaper()
        return decision.outcome

    def release(
        self, registration: lease.Registration, *, grace: float | None = None, keep: bool = False
    ) -> Outcome:
        """Drop a holder; the last one out starts the grace (or TTL) after which the stack goes."""
        try:
            with self._locked():
                self._fault("release.locked")
                registration.drop()
                self._fault("release.dropped")
                live, removed = lease.prune(self.state_dir)
                try:
                    state = self._load(live)
                except StateDirInUse:
                    return Outcome.ABSENT  # the directory holds another stack now: not ours to stop
                if state is None:
                    return Outcome.ABSENT
                if live:
                    return Outcome.HELD
                leaver = dataclasses.replace(registration.holder, keep=registration.holder.keep or keep)
                return self._go_idle(
                    state, [leaver, *removed], self.settings.grace if grace is None else grace
                )
        finally:
            registration.drop()

    def end_session(self, holder_id: str, *, keep: bool = False) -> tuple[Outcome, list[lease.Holder]]:
        """Remove a session pin at the end of its session: the stack goes now unless others hold
        it, or ``keep`` (or a keep or TTL asked for while it ran) keeps it up.

        Returns what became of the stack, and the holders still holding.
        """
        path = self.state_dir / lease.HOLDERS / f"{holder_id}.json"
        if not path.exists():
            return Outcome.ABSENT, []
        with self._locked():
            found = [h for h, p in lease.read_holders(self.state_dir) if h.id == holder_id]
            path.unlink(missing_ok=True)
            live, removed = lease.prune(self.state_dir)
            try:
                state = self._load(live)
            except StateDirInUse:
                return Outcome.ABSENT, live
            if not found or state is None:
                return Outcome.ABSENT, live
            if live:
                return Outcome.HELD, live
            leaver = dataclasses.replace(found[0], keep=found[0].keep or keep)
            return self._go_idle(state, [leaver, *removed], 0.0), []

    def service_logs(self, name: str, lines: int = 20) -> list[str]:
        """The last ``lines`` lines of a running service's log (empty when it has no container)."""
        running = [c for c in self.objects.containers(name) if c.running]
        return self.objects.logs(running[0].id, lines) if running else []

    def pin(self, ttl: float | None) -> lease.Holder:
        """Add an ``envkit up`` pin: holds the stack until ``envkit down`` (or for ``ttl`` seconds)."""
        holder = lease.new_holder("pin", expires=None if ttl is None else time.time() + ttl)
        with self._locked():
            lease.register(self.state_dir, holder)
        return holder

    def down(self, force: bool = False) -> Down:
        """Remove ``envkit up`` pins, then stop the stack unless other holders remain (or ``force``).

        With ``force``, a state lock whose owner is stopped (SIGSTOP) or gone does not stop the
        stop: after :data:`FORCE_WAIT` seconds the stack is removed by its label all the same.
        An owner that runs is waited for, as long as for any lock (then LockTimeout names it).
        A state directory that holds another stack, which runs, is StateDirInUse: nothing of it
        is touched.
        """
        stuck = FORCE_WAIT if force else None
        with (
            lease.state_lock(self.state_dir, self.settings.lock_timeout, unless_stuck_after=stuck) as passed,
            self.daemon.bounded(call_bound(self.settings)),
        ):
            _refuse_another(self)
            lease.remove_pins(self.state_dir)
            live, _ = lease.prune(self.state_dir)
            if live and not force:
                return Down(0, live)
            if force:
                lease.remove_all(self.state_dir)
            return Down(self.objects.stop(self.state_file), live, lock_owner=passed)

    def status(self) -> dict[str, Any]:
        """What runs, who holds it and for how long it stays: a JSON-ready dict (changes nothing)."""
        from envkit.stack.status import status

        return status(self.config, self.daemon, self.reach, revive=self.revive_reaper)


def _refuse_another(stack: Stack) -> None:
    """StateDirInUse if the state directory holds another stack that runs (changes nothing)."""
    try:
        state = stack.state_file.read()
    except StateCorrupt:
        return  # whose it was cannot be told: this stack's own labels decide what goes
    live = any(lease.is_alive(h, p) for h, p in lease.read_holders(stack.state_dir))
    refuse_another(stack.state_dir, state, stack.id, live, stack.daemon)
