"""The one place envkit talks to the Docker daemon's connection setup, and its labels.

Every object envkit creates carries ``envkit.stack``; anything without it is
never touched.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import docker
import requests
from docker.errors import DockerException
from docker.utils import kwargs_from_env

from envkit.errors import DaemonError, DockerUnavailable

LABEL_STACK = "envkit.stack"
LABEL_IMAGE = "envkit.image"
LABEL_KEY = "envkit.key"

CONNECT_TIMEOUT = 2  # seconds
REQUEST_TIMEOUT = 300


def connect(environ: Mapping[str, str] | None = None) -> docker.APIClient:
    """A client for the daemon named by DOCKER_HOST (or the default socket).

    Raises :class:`DockerUnavailable` within :data:`CONNECT_TIMEOUT` seconds
    when the daemon does not answer.
    """
    try:
        kwargs = kwargs_from_env(environment=environ)
        client = docker.APIClient(**kwargs, version="auto", timeout=CONNECT_TIMEOUT)
    except DockerException as err:
        raise DockerUnavailable(_first_line(err)) from None
    client.timeout = REQUEST_TIMEOUT
    return client


def daemon_platform(client: docker.APIClient) -> str:
    """``os/arch`` of the daemon: the platform an image is built for unless one is set."""
    version = client.version(api_version=False)
    return f"{version.get('Os', 'linux')}/{version.get('Arch', 'amd64')}"


def inspect_image(client: docker.APIClient, ref: str) -> dict[str, Any]:
    """``docker image inspect``; raises docker.errors.ImageNotFound when absent."""
    return dict(client.inspect_image(ref))  # type: ignore[no-untyped-call]


def release(err: Exception) -> None:
    """Close the HTTP response a docker-py error holds, so its connection is not leaked."""
    response = getattr(err, "response", None)
    if response is not None:
        response.close()


@contextmanager
def daemon_errors() -> Iterator[None]:
    """Turn docker-py's and requests' exceptions that escape envkit's own handling into DaemonError."""
    try:
        yield
    except (DockerException, requests.exceptions.RequestException) as err:
        raise DaemonError(_first_line(err)) from None


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
