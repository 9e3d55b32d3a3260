"""The console script and the Invoke collection are the same tasks."""

from __future__ import annotations

import subprocess
import sys

import envkit
from envkit.tasks import ns


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "envkit", *args], capture_output=True, text=True, timeout=60)


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"envkit {envkit.__version__}"


def test_the_collection_is_the_console_script() -> None:
    assert {"build", "gc"} <= set(ns.task_names)
    proc = run("--list")
    assert proc.returncode == 0
    for name in ns.task_names:
        assert name in proc.stdout


def test_unknown_option_is_a_usage_error_without_traceback() -> None:
    proc = run("build", "--no-such-option")
    assert proc.returncode != 0
    assert "no-such-option" in proc.stderr
    assert "Traceback" not in proc.stderr
