"""The fault tier: holders, reapers and lock owners killed or stopped at exact moments, and an
engine that refuses, hangs or answers garbage. Everything runs against the real daemon.

The fixtures are the integration tier's (a throwaway project with a two-service stack on a
busybox image, whose leftovers fail the test).
"""

from __future__ import annotations

from integration.conftest import _isolated_environment, stack_project

__all__ = ["_isolated_environment", "stack_project"]
