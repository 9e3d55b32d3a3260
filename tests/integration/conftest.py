"""Fixtures for every integration test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ENVKIT_* from the caller; build locks in a private cache (also for the CLI it runs)."""
    for name in list(os.environ):
        if name.startswith("ENVKIT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
