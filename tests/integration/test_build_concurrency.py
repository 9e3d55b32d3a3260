"""Two ``envkit build`` processes on one stack at the same time build each image once."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import time

import docker
import pytest
from conftest import Project

from envkit.docker import labels
from integration import events

pytestmark = pytest.mark.docker

IMAGES = ("base", "child", "sib")


def make_stack(project: Project) -> None:
    project.write(
        "envkit.toml",
        f'[stack]\nname = "{project.stack}"\n\n[images.base]\n\n[images.child]\n\n'
        '[images.sib]\nargs = { GREETING = "hello" }\n',
    )
    # Content unique to this test keeps the builder's layer cache out of the way,
    # so each image takes seconds to build; the RUN widens the window in which
    # the second process finds the first one building base.
    project.write("images/base/Dockerfile", f"FROM {project.base}\nCOPY . /base/\nRUN sleep 1\n")
    project.write("images/base/unique.txt", f"{project.stack}\n")
    project.write("images/child/Dockerfile", "FROM base\nCOPY . /child/\n")
    project.write("images/child/unique.txt", f"{project.stack}\n")
    project.write("images/sib/Dockerfile", f"FROM {project.base}\nARG GREETING\nCOPY . /sib/\n")
    project.write("images/sib/unique.txt", f"{project.stack}\n")


def test_two_concurrent_builds_build_each_image_once(
    project: Project, docker_client: docker.APIClient
) -> None:
    make_stack(project)
    since = time.time()
    command = [sys.executable, "-m", "envkit", "build", "--json"]
    procs = [
        subprocess.Popen(
            command,
            cwd=project.root,
            env=project.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=180)
            assert proc.returncode == 0, stderr
            outputs.append(json.loads(stdout))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    # Across both outputs each image was built exactly once and found once.
    by_image: dict[str, list[dict[str, object]]] = collections.defaultdict(list)
    for output in outputs:
        assert [entry["image"] for entry in output] == list(IMAGES)
        for entry in output:
            by_image[str(entry["image"])].append(entry)
    for image in IMAGES:
        first, second = by_image[image]
        assert sorted([first["status"], second["status"]]) == ["built", "cached"], by_image[image]
        assert first["tag"] == second["tag"]
        assert first["key"] == second["key"]
    # The two runs really overlapped: one of them waited for the other's build.
    waited = [
        entry
        for entries in by_image.values()
        for entry in entries
        if "built meanwhile by another envkit process" in entry["reasons"]  # type: ignore[operator]
    ]
    assert waited, outputs

    # Counted another way: the daemon saw each tag applied once, to one image.
    tags = {image: str(by_image[image][0]["tag"]) for image in IMAGES}
    tags_seen = events.log().between(since, kind="image", action="tag")
    tagged = collections.Counter(event["Actor"]["Attributes"].get("name") for event in tags_seen)
    assert {tag: tagged[tag] for tag in tags.values()} == dict.fromkeys(tags.values(), 1), tagged
    for image, tag in tags.items():
        key = str(by_image[image][0]["key"])
        ids = {i["Id"] for i in docker_client.images(filters={"label": f"{labels.KEY}={key}"})}
        assert len(ids) == 1, (image, ids)
        assert docker_client.inspect_image(tag)["Id"] in ids
