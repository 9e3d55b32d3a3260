"""graph.run, the parallel scheduler of builds and starts: what a caller waiting on it sees."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from envkit import graph


def test_ctrl_c_handed_to_a_worker_thread_still_interrupts_the_waiting_caller() -> None:
    """The kernel may deliver Ctrl-C's SIGINT to any thread of the process. Sent here to the
    worker itself, it must still end the caller's wait at once (Python raises it in the main
    thread only when that thread runs), not when the work ends ten seconds later."""
    # Python's own Ctrl-C handler, whatever this process inherited (a shell's background job
    # starts with SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    started, release = threading.Event(), threading.Event()
    worker: list[int] = []

    def work(name: str) -> None:
        worker.append(threading.get_ident())
        started.set()
        release.wait(10)  # blocked, as a build reading its stream is

    def interrupt() -> None:
        if started.wait(30):
            signal.pthread_kill(worker[0], signal.SIGINT)  # to the blocked worker thread

    threading.Thread(target=interrupt, daemon=True).start()
    began = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            graph.run({"a": ()}, ["a"], work, jobs=1, thread_name="envkit-test")
        waited = time.monotonic() - began
    finally:
        release.set()
        signal.signal(signal.SIGINT, previous)
    assert waited < 5, f"the caller waited {waited:.1f}s: until the work ended"


def test_work_runs_after_what_it_needs_and_the_first_failure_is_raised() -> None:
    done: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        if name == "bad":
            raise ValueError("bad failed")
        with lock:
            done.append(name)

    graph.run({"base": (), "app": ("base",), "tool": ("base",)}, ["base", "app", "tool"], work, jobs=2)
    assert done[0] == "base" and sorted(done[1:]) == ["app", "tool"]
    with pytest.raises(ValueError, match="bad failed"):
        graph.run({"bad": (), "child": ("bad",)}, ["bad", "child"], work, jobs=2)
    assert "child" not in done  # nothing starts on a failed node
