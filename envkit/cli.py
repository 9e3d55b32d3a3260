"""The ``envkit`` console script: an Invoke program over :data:`envkit.tasks.ns`."""

from __future__ import annotations

import os
import sys

from invoke import Program

from envkit import __version__
from envkit.tasks import ns

program = Program(namespace=ns, version=__version__, name="envkit", binary="envkit")

SIGPIPE_EXIT = 141  # how a shell reports a process ended by SIGPIPE


def main() -> None:
    code: str | int | None = 0
    try:
        program.run()
    except SystemExit as done:  # Invoke ends every run with sys.exit
        code = done.code if isinstance(done.code, (str, int)) or done.code is None else 1
    except BrokenPipeError:
        code = SIGPIPE_EXIT
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = code or SIGPIPE_EXIT
    if code == SIGPIPE_EXIT or _stdout_gone():
        # The reader went away (`envkit status | head`): nothing more can be said to it, and
        # Python must not complain while flushing at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(code)


def _stdout_gone() -> bool:
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        return True
    return False
