"""The e2e suite: runs against the demo stack of envkit.toml (see conftest.py)."""
