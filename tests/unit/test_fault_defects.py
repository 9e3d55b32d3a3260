"""Defects a fault-injection run found that need no Docker: numbers, references, usage, locks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import filelock
import pytest

from envkit.config.find import load
from envkit.config.model import ImageSpec
from envkit.errors import BuildError, ConfigError
from envkit.images import build as build_mod
from envkit.images.digest import Hasher
from envkit.images.statcache import StatCache


def stack(tmp_path: Path, body: str, dockerfile: str = "FROM busybox\n") -> Path:
    (tmp_path / "images" / "app").mkdir(parents=True, exist_ok=True)
    (tmp_path / "images" / "app" / "Dockerfile").write_text(dockerfile)
    (tmp_path / "envkit.toml").write_text('[stack]\nname = "d"\n' + body)
    return tmp_path


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", "+inf"])
def test_a_start_timeout_that_is_not_a_finite_number_is_refused(tmp_path: Path, value: str) -> None:
    stack(tmp_path, f'[services.db]\nimage = "redis"\nstart_timeout = {value}\n')
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={})
    assert caught.value.key == "services.db.start_timeout"


@pytest.mark.parametrize("table", ["args", "environment"])
@pytest.mark.parametrize("value", ["nan", "inf", "1e400"])
def test_build_args_and_environment_must_be_finite(tmp_path: Path, table: str, value: str) -> None:
    body = (
        f"[images.app]\nargs = {{ A = {value} }}\n"
        if table == "args"
        else f'[services.db]\nimage = "redis"\nenvironment = {{ A = {value} }}\n'
    )
    stack(tmp_path, body)
    with pytest.raises(ConfigError, match="not a finite number"):
        load(tmp_path, environ={})


@pytest.mark.parametrize("ref", ["../x", "../b:1", "a..b/c", ".x/y", "-a/b", "reg.io:/x"])
def test_a_path_is_not_an_image_reference(tmp_path: Path, ref: str) -> None:
    stack(tmp_path, f'[services.db]\nimage = "{ref}"\n')
    with pytest.raises(ConfigError, match="nor a valid image reference"):
        load(tmp_path, environ={})
    stack(tmp_path, "[images.app]\n", dockerfile=f"FROM {ref}\n")
    with pytest.raises(ConfigError, match="nor a valid image reference"):
        load(tmp_path, environ={})


@pytest.mark.parametrize(
    "args",
    [
        ["build", "--image"],
        ["build", "-i"],
        ["up", "--service"],
        ["build", "--image", "--json"],
        # given with a value once, and once without: Invoke keeps the one, drops the other
        ["build", "--image", "x", "--image"],
        ["build", "--image", "x", "--image", "--json"],
        ["build", "-i", "x", "-i"],
        ["build", "--image=x", "-i"],
        ["build", "--image", "--image", "x"],
        ["build", "--image", "x", "--image="],
        ["build", "-ji"],
        ["up", "--service", "no-such-service", "--service"],
    ],
)
def test_a_repeatable_option_without_a_value_is_a_usage_error(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "envkit", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "needs a value" in proc.stderr and "Traceback" not in proc.stderr


def test_a_build_waits_for_another_builder_but_not_for_a_stopped_one(tmp_path: Path) -> None:
    """The build lock is held by a process that is stopped (SIGSTOP): a clear error, not a hang."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        os.kill(sleeper.pid, signal.SIGSTOP)
        tag = "d/app:0123456789abcdef"
        path = tmp_path / (build_mod.hashlib.sha256(tag.encode()).hexdigest()[:32] + ".lock")
        held = filelock.FileLock(path, thread_local=False)
        held.acquire()  # as the stopped builder did before it stopped
        path.with_suffix(".owner").write_text(str(sleeper.pid))
        notes: list[str] = []

        class Notes:
            def log(self, subject: str, line: str) -> None: ...

            def note(self, subject: str, message: str, state: object = None) -> None:
                notes.append(message)

        failure: list[BaseException] = []

        def wait() -> None:
            try:
                with build_mod._machine_lock(tag, "app", Notes(), tmp_path):
                    pass
            except BaseException as err:
                failure.append(err)

        waiter = threading.Thread(target=wait, daemon=True)
        started = time.monotonic()
        waiter.start()
        waiter.join(15)
        assert not waiter.is_alive(), "the build waited on a stopped builder"
        assert time.monotonic() - started < 10
        assert isinstance(failure[0], BuildError)
        assert f"pid {sleeper.pid}" in str(failure[0]) and "stopped" in str(failure[0])
        assert any("waiting for another envkit process" in n for n in notes)
        held.release()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_context_far_larger_than_an_image_needs_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`context = "/usr"` would be hashed for minutes in silence: it is said, with the fix."""
    from envkit.images import digest

    monkeypatch.setattr(digest, "LARGE_CONTEXT", 50)
    context = tmp_path / "ctx"
    for n in range(80):
        (context / f"d{n % 4}").mkdir(parents=True, exist_ok=True)
        (context / f"d{n % 4}" / f"f{n}").write_text(str(n))
    spec = ImageSpec("app", context, context / "Dockerfile", "FROM x\n", {}, None, None, (), ())
    notes: list[str] = []

    class Notes:
        def log(self, subject: str, line: str) -> None: ...

        def note(self, subject: str, message: str, state: object = None) -> None:
            notes.append(message)

    Hasher(StatCache(tmp_path / "cache.json")).context_files(spec, progress=Notes())
    assert any("84 entries" in n and ".dockerignore" in n for n in notes), notes
