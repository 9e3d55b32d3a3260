"""``python -m envkit`` is the ``envkit`` console script."""

from envkit.cli import main

main()
