"""What the pytest plugin shows of progress: it goes by a note's state, never by its words."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import pytest

from envkit.progress import State
from envkit.pytest_plugin import _TerminalProgress


def worker_config() -> Any:
    plugins = SimpleNamespace(get_plugin=lambda name: None)
    return SimpleNamespace(workerinput={"workerid": "gw3"}, pluginmanager=plugins)


def test_a_worker_leaves_out_waiting_notes_whatever_their_words(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    progress = _TerminalProgress(worker_config())
    progress.note("db", "another worker is starting it", State.WAITING)
    progress.note("db", "waiting for another process, said as information", State.INFO)
    progress.note("db", "healthy in 0.5s", State.DONE)
    assert err.getvalue().splitlines() == [
        "envkit [gw3]: db: waiting for another process, said as information",
        "envkit [gw3]: db: healthy in 0.5s",
    ]
