"""Integration tests: they run against the real Docker daemon (``-m docker``).

This file makes the folder a package so that its test modules cannot clash by
basename with same-named modules in tests/unit under pytest's default import mode.
"""
