"""Docker's ``.dockerignore`` rules, as docker-py implements them (negations included).

Only a context walk that has rules to match imports this (and docker-py with
it): a no-op build whose contexts did not change never does.
"""

from __future__ import annotations

from collections.abc import Sequence


class IgnoreRules:
    """The compiled patterns of one ignore file."""

    def __init__(self, patterns: Sequence[str]) -> None:
        from docker.utils.build import PatternMatcher

        # docker-py's PatternMatcher keeps the list it is given: hand it a copy.
        self._matcher = PatternMatcher(list(patterns))
        self.negations = tuple(p.cleaned_pattern for p in self._matcher.patterns if p.exclusion)

    def excludes(self, path: str) -> bool:
        """Whether the context path ``path`` (``a/b``, relative, with ``/``) is left out."""
        # (docker-py's stub says PathLike; the matcher works on str paths)
        return bool(self._matcher.matches(path))  # type: ignore[arg-type]

    def may_include_below(self, directory: str) -> bool:
        """Whether a negation may bring back something below an excluded ``directory``."""
        return any(n.startswith(directory) for n in self.negations)
