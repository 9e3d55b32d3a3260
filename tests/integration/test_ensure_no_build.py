"""``ensure(..., build=False)`` (``--envkit-no-build``, ``envkit e2e --no-build``) against the real daemon."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import docker
import pytest
from conftest import Project

import envkit.images.build
from envkit.config.find import load
from envkit.docker import labels
from envkit.docker.engine import Daemon
from envkit.errors import ImageMissing

pytestmark = pytest.mark.docker


class Counted:
    """A daemon whose image-making calls (``build``, ``load``) are counted."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.builds = 0


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counted]:
    daemon = Daemon()
    the_counted = Counted(daemon)
    for name in ("build", "load"):  # the classic builder, envkit's assembler
        original = getattr(daemon, name)

        def counting(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            the_counted.builds += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(daemon, name, counting)
    yield the_counted
    daemon.close()


def stack_images(client: docker.APIClient, stack: str) -> list[str]:
    return sorted(i["Id"] for i in client.images(filters={"label": f"{labels.PROJECT}={stack}"}))


def make_project(project: Project) -> None:
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[images.base]\n\n[images.child]\n')
    project.write("images/base/Dockerfile", f"FROM {project.base}\nCOPY . /base/\n")
    project.write("images/base/a.txt", "alpha\n")
    project.write("images/child/Dockerfile", "FROM base\nCOPY . /child/\n")
    project.write("images/child/c.txt", "charlie\n")


def test_no_build_fails_on_a_missing_image_and_builds_nothing(
    project: Project, counted: Counted, docker_client: docker.APIClient
) -> None:
    make_project(project)
    with pytest.raises(ImageMissing) as caught:
        envkit.images.build.ensure(load(project.root), counted.daemon, build=False)
    err = caught.value
    assert err.images == ["base", "child"]
    assert "base, child" in str(err) and "not built" in str(err)
    assert counted.builds == 0
    assert stack_images(docker_client, project.stack) == []

    # built once, the same call finds everything cached
    built = envkit.images.build.ensure(load(project.root), counted.daemon)
    assert [r.status for r in built] == ["built", "built"]
    assert counted.builds == 2
    present = stack_images(docker_client, project.stack)
    cached = envkit.images.build.ensure(load(project.root), counted.daemon, build=False)
    assert [(r.image, r.status) for r in cached] == [("base", "cached"), ("child", "cached")]
    assert [r.tag for r in cached] == [r.tag for r in built]
    assert counted.builds == 2

    # a changed child is missing; only it is named, and still nothing is built
    project.write("images/child/c.txt", "charlie, edited\n")
    with pytest.raises(ImageMissing) as caught:
        envkit.images.build.ensure(load(project.root), counted.daemon, build=False)
    assert caught.value.images == ["child"]
    assert "file changed: c.txt" in caught.value.reason
    assert "image child is not built" in str(caught.value)
    assert counted.builds == 2
    assert stack_images(docker_client, project.stack) == present
