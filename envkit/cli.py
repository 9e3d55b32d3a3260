"""The ``envkit`` console script: an Invoke program over :data:`envkit.tasks.ns`."""

from __future__ import annotations

from invoke import Program

from envkit import __version__
from envkit.tasks import ns

program = Program(namespace=ns, version=__version__, name="envkit", binary="envkit")


def main() -> None:
    program.run()
