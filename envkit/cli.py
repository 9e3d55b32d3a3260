"""The ``envkit`` console script: an Invoke program over :data:`envkit.tasks.ns`."""

from __future__ import annotations

import os
import sys

from invoke import Program

from envkit import __version__
from envkit.tasks import ns

program = Program(namespace=ns, version=__version__, name="envkit", binary="envkit")


def main() -> None:
    try:
        program.run()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`envkit status | head`): nothing more can be said to it, and
        # Python must not complain while flushing at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)  # as a shell reports a process ended by SIGPIPE
