"""The stack definition: a stack file read into frozen specs (:mod:`envkit.config.model`).

``find`` locates the stack file and loads it; ``toml`` reads ``envkit.toml`` or
``[tool.envkit]`` in pyproject.toml; ``compose`` reads compose files into the same
specs; ``recipe`` reads a Debian recipe; ``show`` is the resolved stack as
``envkit config`` prints it.
"""
