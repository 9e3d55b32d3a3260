"""Re-locking a Debian recipe: `envkit relock` pins what the mirror serves now.

The mirror is asked through a fake ``mmdebstrap`` first on PATH, which answers
``--simulate`` with apt's ``Inst NAME (VERSION ...)`` lines.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from envkit.config import recipe as recipe_model
from envkit.errors import BuildError
from envkit.images import recipe

RECIPE = """\
# the demo's base
[debian]
suite = "bookworm"
snapshot = "20240101T000000Z"   # the lock's date
sources = ["deb http://deb.debian.org/debian bookworm main"]

[packages]                # pinned
redis-server = "5:7.0.15-1~deb12u1"   # the cache
python3 = "3.11.2-1+b1"
python3-jwt = "*"

[image]
env = { python3 = "not a package pin" }
"""

# apt's simulated install, as mmdebstrap --simulate --verbose prints it
SIMULATE = """\
echo "I: running apt-get update..."
printf '%s\\n' "$@" > "$(dirname "$0")/argv"
echo "Inst libc6 (2.36-9+deb12u9 Debian:12/stable [amd64])"
echo "Inst redis-server (5:7.0.15-1~deb12u10 Debian-Security:12/oldstable-security [amd64])"
echo "Inst python3 (3.11.2-1+b1 Debian:12/stable [amd64])"
echo "Inst python3-jwt (2.6.0-1+deb12u1 Debian:12/stable [all])"
echo "Conf redis-server (5:7.0.15-1~deb12u10 Debian-Security:12/oldstable-security [amd64])"
"""


class Notes:
    def log(self, image: str, line: str) -> None:
        pass

    def note(self, image: str, message: str, state: object = None) -> None:
        pass


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ.get('PATH', '')}")
    return directory


def fake_mmdebstrap(directory: Path, body: str) -> None:
    script = directory / "mmdebstrap"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)


def test_relock_text_changes_only_pins_and_the_snapshot() -> None:
    new = recipe.relock_text(
        RECIPE, {"redis-server": "5:7.0.15-1~deb12u10", "python3-jwt": "2.6.0-1+deb12u1"}, "20261125T101500Z"
    )
    assert 'snapshot = "20261125T101500Z"   # the lock\'s date\n' in new
    assert 'redis-server = "5:7.0.15-1~deb12u10"   # the cache\n' in new
    assert 'python3-jwt = "2.6.0-1+deb12u1"\n' in new
    assert 'python3 = "3.11.2-1+b1"\n' in new  # not asked to change
    assert 'env = { python3 = "not a package pin" }' in new  # another table's key of the same name
    assert new.count("\n") == RECIPE.count("\n")
    assert [line for line in new.splitlines() if line.startswith("#")] == ["# the demo's base"]
    parsed = recipe_model.parse(Path("/r.toml"), new, "images.base")
    assert dict(parsed.packages) == {
        "redis-server": "5:7.0.15-1~deb12u10",
        "python3": "3.11.2-1+b1",
        "python3-jwt": "2.6.0-1+deb12u1",
    }


def test_resolve_asks_mmdebstrap_simulate_for_every_package_unpinned(fake_bin: Path) -> None:
    fake_mmdebstrap(fake_bin, SIMULATE)
    r = recipe_model.parse(Path("/r.toml"), RECIPE, "images.base")
    assert recipe.resolve("base", r, Notes()) == {
        "redis-server": "5:7.0.15-1~deb12u10",
        "python3": "3.11.2-1+b1",
        "python3-jwt": "2.6.0-1+deb12u1",
    }
    argv = (fake_bin / "argv").read_text().split("\n")
    assert "--simulate" in argv
    assert "--include=redis-server,python3,python3-jwt" in argv  # unpinned: what the mirror has
    assert os.devnull in argv


def test_resolve_names_a_package_the_mirror_does_not_offer(fake_bin: Path) -> None:
    fake_mmdebstrap(fake_bin, SIMULATE)
    r = recipe_model.parse(Path("/r.toml"), RECIPE, "images.base")
    r = recipe_model.Recipe(**{**r.__dict__, "packages": {**r.packages, "no-such-pkg": "1"}})
    with pytest.raises(BuildError, match="no-such-pkg"):
        recipe.resolve("base", r, Notes())


def test_resolve_failure_shows_mmdebstrap_output(fake_bin: Path) -> None:
    fake_mmdebstrap(fake_bin, 'echo "E: Failed to fetch the package lists"\nexit 1\n')
    r = recipe_model.parse(Path("/r.toml"), RECIPE, "images.base")
    with pytest.raises(BuildError) as caught:
        recipe.resolve("base", r, Notes())
    assert "exit code 1" in str(caught.value)
    assert "E: Failed to fetch the package lists" in caught.value.build_log


def _relock(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENVKIT_")}
    env["ENVKIT_ROOT"] = str(root)
    return subprocess.run(
        [sys.executable, "-m", "envkit", "relock", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_envkit_relock_check_then_write_then_current(fake_bin: Path, tmp_path: Path) -> None:
    fake_mmdebstrap(fake_bin, SIMULATE)
    root = tmp_path / "project"
    (root / "images" / "base").mkdir(parents=True)
    (root / "images" / "base" / "recipe.toml").write_text(RECIPE)
    (root / "envkit.toml").write_text('[stack]\nname = "x"\n\n[images.base]\nrecipe = "recipe.toml"\n')
    recipe_file = root / "images" / "base" / "recipe.toml"

    check = _relock(root, "--check")
    assert check.returncode == 1, check.stdout + check.stderr
    assert "redis-server: 5:7.0.15-1~deb12u1 -> 5:7.0.15-1~deb12u10" in check.stdout
    assert "python3-jwt: * -> 2.6.0-1+deb12u1" in check.stdout
    assert recipe_file.read_text() == RECIPE  # --check writes nothing

    write = _relock(root)
    assert write.returncode == 0, write.stdout + write.stderr
    assert "re-locked" in write.stdout
    text = recipe_file.read_text()
    assert 'redis-server = "5:7.0.15-1~deb12u10"' in text
    assert 'snapshot = "20240101T000000Z"' not in text  # the lock's date moved on

    again = _relock(root, "--check")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "every pin is current" in again.stdout

    wrong = _relock(root, "--image", "nope")
    assert wrong.returncode == 2
    assert "'nope' is not an image made from a recipe" in wrong.stderr
