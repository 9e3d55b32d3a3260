"""The wheel holds the whole package: every module, py.typed, the command and the plugin, one version.

It is built from a copy of the package in a temporary folder, with the venv's setuptools (no
network). `.ci/package-check` goes further: it installs the wheel in a fresh virtualenv and uses it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import envkit

CHECKOUT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_every_module_the_command_and_the_plugin(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(CHECKOUT / name, source / name)
    shutil.copytree(CHECKOUT / "envkit", source / "envkit", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--no-isolation",
            "--wheel",
            "--outdir",
            str(tmp_path / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = (tmp_path / "dist").glob("*.whl")
    assert wheel.name == f"envkit_docker-{envkit.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"envkit_docker-{envkit.__version__}.dist-info"
        metadata = archive.read(f"{info}/METADATA").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    expected = {p.relative_to(CHECKOUT).as_posix() for p in (CHECKOUT / "envkit").rglob("*.py")}
    assert len(expected) > 40
    assert expected - names == set(), "modules missing from the wheel"
    assert "envkit/py.typed" in names
    assert re.search(r"^Name: envkit-docker$", metadata, re.M)
    assert re.search(rf"^Version: {re.escape(envkit.__version__)}$", metadata, re.M)
    assert "envkit = envkit.cli:main" in entry_points and "[console_scripts]" in entry_points
    assert "envkit = envkit.pytest_plugin" in entry_points and "[pytest11]" in entry_points


def test_the_readme_installs_what_pyproject_names() -> None:
    pyproject = (CHECKOUT / "pyproject.toml").read_text()
    name = re.search(r'^name = "([^"]+)"', pyproject, re.M)
    assert name is not None and name[1] != "envkit"  # "envkit" on the index is another project
    installs = re.findall(r"pip install ([\w.-]+)", (CHECKOUT / "README.md").read_text())
    assert installs and set(installs) == {name[1]}


def test_make_dist_needs_only_the_venv(tmp_path: Path) -> None:
    """`make dist` builds with the venv's setuptools: it must not need root and apt (system-deps)."""
    if shutil.which("make") is None:
        pytest.skip("no make here")
    shutil.copy(CHECKOUT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    planned = subprocess.run(
        ["make", "--dry-run", "dist"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert planned.returncode == 0, planned.stderr
    assert "-m venv" in planned.stdout and "-m build" in planned.stdout  # the venv, then the build
    for system in ("dpkg", "apt-get", "sudo"):
        assert system not in planned.stdout, planned.stdout
