"""Dependency graphs: images that build on images, services that depend on services.

A graph is a mapping ``node -> the nodes it needs``. Three questions are
asked of it, each answered here once: in which order (:func:`order`), is
there a cycle (:func:`find_cycle`), and how to do the work of every node in
parallel, a node starting as soon as what it needs is done (:func:`run`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Collection, Mapping, Sequence

Graph = Mapping[str, Sequence[str]]

# How often a caller waiting for work looks up. The kernel may hand Ctrl-C's SIGINT to a worker
# thread; that does not wake a main thread blocked on a lock, and Python raises
# KeyboardInterrupt only once the main thread runs again: so it never blocks for long.
WAKE = 0.2  # seconds


def order(graph: Graph, names: Collection[str] | None = None) -> list[str]:
    """``names`` (every node when None) and everything they need, each node after what it needs.

    Ties keep the order of ``names`` (then of the graph), so the result is stable.
    """
    out: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for need in graph[name]:
            visit(need)
        out.append(name)

    for name in graph if names is None else names:
        visit(name)
    return out


def layers(graph: Graph, names: Sequence[str]) -> list[list[str]]:
    """``names`` (closed under what they need, in :func:`order`) grouped by depth: the nodes of
    one layer need only nodes of earlier layers."""
    depth: dict[str, int] = {}
    for name in names:
        depth[name] = 1 + max((depth[n] for n in graph[name] if n in depth), default=-1)
    out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for name in names:
        out[depth[name]].append(name)
    return out


def find_cycle(graph: Graph) -> list[str]:
    """A cycle (``[a, b, a]``), or an empty list. Every edge must name a node of the graph."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(name: str, path: list[str]) -> list[str]:
        if state.get(name) == 2:
            return []
        if state.get(name) == 1:
            return [*path[path.index(name) :], name]
        state[name] = 1
        for target in graph[name]:
            found = visit(target, [*path, name])
            if found:
                return found
        state[name] = 2
        return []

    for name in graph:
        found = visit(name, [])
        if found:
            return found
    return []


def run(
    graph: Graph,
    names: Sequence[str],
    work: Callable[[str], None],
    *,
    jobs: int,
    thread_name: str = "envkit",
    on_interrupt: Callable[[], None] | None = None,
) -> None:
    """Call ``work(name)`` for every one of ``names``, at most ``jobs`` at a time, each once
    the names it needs (among ``names``) are done.

    After a failure nothing new starts; the work already running finishes,
    and the first failure is raised. The workers are daemon threads. On
    Ctrl-C the caller leaves at once (an unfinished build's connection is
    closed as the process exits, which makes the daemon cancel it), unless
    ``on_interrupt`` is given: then it is called (to tell the work to stop),
    the work already running is waited for, and the interrupt is raised.
    """
    selected = set(names)
    waiting = {name: {n for n in graph[name] if n in selected} for name in names}
    finished: queue.Queue[tuple[str, BaseException | None]] = queue.Queue()
    failures: list[BaseException] = []
    running = 0

    def one(name: str) -> None:
        try:
            work(name)
        except BaseException as err:  # handed to the calling thread, which raises it
            finished.put((name, err))
        else:
            finished.put((name, None))

    while True:
        ready = [n for n, needs in waiting.items() if not needs] if not failures else []
        for name in ready[: max(1, jobs) - running]:
            del waiting[name]
            threading.Thread(target=one, args=(name,), name=f"{thread_name}-{name}", daemon=True).start()
            running += 1
        if not running:
            break
        try:
            name, error = _next(finished)
        except BaseException:
            if on_interrupt is None:
                raise
            on_interrupt()
            for _ in range(running):
                _next(finished)
            raise
        running -= 1
        if error is None:
            for needs in waiting.values():
                needs.discard(name)
        else:
            failures.append(error)
    if failures:
        raise failures[0]


def _next(finished: queue.Queue[tuple[str, BaseException | None]]) -> tuple[str, BaseException | None]:
    """The next finished work, waited for in slices of :data:`WAKE` (see there why)."""
    while True:
        try:
            return finished.get(timeout=WAKE)
        except queue.Empty:
            continue
