"""What a new user sees in their repository: envkit's folders never show up in `git status`."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from integration.stack_fixtures import StackProject

pytestmark = pytest.mark.docker


def git(sp: StackProject, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=sp.root,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_envkit_leaves_nothing_for_git_to_see(stack_project: StackProject) -> None:
    sp = stack_project
    alpine = (sp.root / "envkit.toml").read_text().replace("[images.bb]", "[images.bb]\n", 1)
    (sp.root / "envkit.alpine.toml").write_text(alpine)  # a second stack file: .envkit-alpine/
    git(sp, "init", "-q")
    git(sp, "add", "-A")
    git(sp, "commit", "-q", "-m", "the project")
    assert git(sp, "status", "--porcelain") == ""

    for args, env in (
        (["build"], {}),
        (["up", "--service", "web"], {}),
        (["status"], {}),
        (["down"], {}),
        (["build"], {"ENVKIT_CONFIG": "envkit.alpine.toml"}),
    ):
        proc = sp.cli(*args, **env)
        assert proc.returncode == 0, (args, proc.stderr)
    assert (sp.root / ".envkit").is_dir() and (sp.root / ".envkit-alpine").is_dir()
    assert git(sp, "status", "--porcelain", "--untracked-files=all") == ""
    assert (sp.root / ".envkit" / ".gitignore").read_text().splitlines()[-1] == "*"
    sp.wait_until(sp.gone, 15, "the stack goes after envkit down")


def test_an_existing_state_folder_gets_its_gitignore_too(stack_project: StackProject) -> None:
    """A checkout whose .envkit/ predates the .gitignore gets one on the next run."""
    sp = stack_project
    assert sp.cli("build").returncode == 0
    (sp.state_dir / ".gitignore").unlink()
    shutil.rmtree(sp.state_dir / "manifests")
    assert sp.cli("build").returncode == 0
    assert (sp.state_dir / ".gitignore").is_file()
