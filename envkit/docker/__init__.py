"""The Docker boundary: the only code that talks to the engine or imports docker-py.

``engine`` (every operation, typed, one error translator), ``transport`` (which engine, and
the connection to it), ``labels`` (what envkit marks its objects with). Docker's
.dockerignore rules need no engine: they are :mod:`envkit.images.ignore`.
"""
