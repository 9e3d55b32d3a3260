"""The stack definition: a stack file read into frozen specs (:mod:`envkit.config.model`).

``find`` locates the stack file and loads it; ``toml`` reads ``envkit.toml`` or
``[tool.envkit]`` in pyproject.toml; ``recipe`` reads a Debian recipe. A loader
for compose files goes beside ``toml``.
"""
