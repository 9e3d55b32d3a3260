"""Progress on a terminal: a live view, one line per image with its state and time, the whole log of
what fails; plain prefixed lines when the output is not a terminal; nothing with --quiet.

The terminal is a real pseudo-terminal: `envkit build` runs with stdout and stderr on it.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest
from conftest import Project

pytestmark = pytest.mark.docker

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def two_images(project: Project) -> None:
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[images.base]\n\n[images.app]\n')
    # base has a RUN (the classic builder, which prints a build log); app is assembled
    project.write("images/base/Dockerfile", f"FROM {project.base}\nCOPY . /base/\nRUN echo built\n")
    project.write("images/base/a.txt", "alpha\n")
    project.write("images/app/Dockerfile", "FROM base\nCOPY . /app/\nENV GREETING=hi\n")
    project.write("images/app/b.txt", "bravo\n")


def on_a_terminal(project: Project, *args: str, timeout: float = 240) -> tuple[int, str]:
    """Run ``envkit ARGS`` with stdout and stderr on a pseudo-terminal; its exit code and output."""
    leader, follower = pty.openpty()
    env = {**project.env(), "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "envkit", *args],
        cwd=project.root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # the terminal's other side closed: the process is done
                    break
                if not data:
                    break
                out += data
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=30)
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, out.decode(errors="replace")


def test_a_terminal_gets_a_live_view_with_a_line_per_image(project: Project) -> None:
    two_images(project)
    code, out = on_a_terminal(project, "build")
    assert code == 0, out
    assert ANSI.search(out), "no terminal control: the live view was not drawn"
    text = ANSI.sub("", out)
    for image in ("base", "app"):
        # the view's last drawing: a mark, the image, its state and tag, its time
        assert re.search(
            rf"✓ {image}\s+built {project.stack}/{image}:[0-9a-f]{{16}} in [0-9.]+s\s+[0-9.]+s", text
        ), text
    assert "base | " not in text  # no plain prefixed log lines on a terminal
    assert "2 images: 2 built, 0 cached" in text  # the result, after the view


def test_a_failing_build_shows_its_whole_log_on_a_terminal(project: Project) -> None:
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[images.broken]\n')
    lines = " ".join(f"line-{n}" for n in range(1, 61))
    project.write(
        "images/broken/Dockerfile",
        f"FROM {project.base}\nRUN for w in {lines}; do echo $w; done; exit 3\n",
    )
    code, out = on_a_terminal(project, "build")
    text = ANSI.sub("", out)
    assert code == 1, text
    assert "Traceback" not in text
    assert "✗ broken" in text
    # The error names the last lines only; the view printed the whole log of what failed.
    assert re.search(r"\| line-1\r?\n", text), text
    assert re.search(r"\| line-60\r?\n", text), text


def test_without_a_terminal_progress_is_plain_lines(project: Project) -> None:
    two_images(project)
    proc = project.cli("build", check=True)
    assert not ANSI.search(proc.stderr) and not ANSI.search(proc.stdout)
    assert re.search(r"^base \| ", proc.stderr, re.M)  # the build log, prefixed by image
    assert re.search(r"^app: built ", proc.stderr, re.M)
    assert "2 images: 2 built, 0 cached" in proc.stdout


def test_quiet_prints_nothing_even_on_a_terminal(project: Project) -> None:
    two_images(project)
    code, out = on_a_terminal(project, "build", "--quiet")
    assert code == 0, out
    assert out.strip() == ""
