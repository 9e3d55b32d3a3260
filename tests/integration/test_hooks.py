"""``envkit hooks``: the git pre-push hook, run as the real console script in a throwaway repository.

No Docker: git and envkit's own files only. HOME points at an empty directory
so that no global git configuration (a global core.hooksPath) gets in.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ENVKIT = Path(sys.executable).with_name("envkit")  # the console script of this venv
MARKER = "# envkit-hook: pre-push"
FOREIGN = b"#!/bin/sh\n# someone else's hook\nexec ./scripts/lint --strict\n"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENVKIT_", "GIT_"))}
    env.update(
        HOME=str(home),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CEILING_DIRECTORIES=str(tmp_path),  # never find a repository above the test's
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )
    return env


@pytest.fixture
def repo(tmp_path: Path, env: dict[str, str]) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, env, "init", "-q")
    return root


def git(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)


def hooks(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENVKIT), "hooks", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def hook_path(repo: Path) -> Path:
    return repo / ".git" / "hooks" / "pre-push"


def backup_path(repo: Path) -> Path:
    return repo / ".git" / "hooks" / "pre-push.envkit-backup"


def is_ours(path: Path) -> bool:
    return MARKER in path.read_text()


def test_install_writes_an_executable_hook_that_runs_e2e(repo: Path, env: dict[str, str]) -> None:
    proc = hooks(repo, env)
    assert proc.returncode == 0, proc.stderr
    hook = hook_path(repo)
    text = hook.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert MARKER in text.splitlines()
    assert "-m envkit e2e --ttl 900" in text
    assert os.access(hook, os.X_OK)
    assert stat.S_IMODE(hook.stat().st_mode) == 0o755
    assert str(hook) in proc.stdout
    assert subprocess.run(["sh", "-n", str(hook)]).returncode == 0  # valid shell
    assert not backup_path(repo).exists()


def test_ttl_is_written_into_the_hook(repo: Path, env: dict[str, str]) -> None:
    assert hooks(repo, env, "--ttl", "60").returncode == 0
    text = hook_path(repo).read_text()
    assert "-m envkit e2e --ttl 60 " in text
    assert "--ttl 900" not in text
    # a second install replaces envkit's own hook silently, with no backup
    proc = hooks(repo, env, "--ttl", "120")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "-m envkit e2e --ttl 120 " in hook_path(repo).read_text()
    assert not backup_path(repo).exists()


@pytest.mark.parametrize("ttl", ["abc", "-5"])
def test_bad_ttl_is_a_usage_error_and_writes_nothing(repo: Path, env: dict[str, str], ttl: str) -> None:
    proc = hooks(repo, env, "--ttl", ttl)
    assert proc.returncode == 2
    assert f"--ttl {ttl!r}" in proc.stderr
    assert not hook_path(repo).exists()


def test_foreign_hook_is_left_alone_without_force(repo: Path, env: dict[str, str]) -> None:
    hook = hook_path(repo)
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_bytes(FOREIGN)
    hook.chmod(0o750)
    proc = hooks(repo, env)
    assert proc.returncode != 0
    assert "--force" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert hook.read_bytes() == FOREIGN
    assert stat.S_IMODE(hook.stat().st_mode) == 0o750
    assert not backup_path(repo).exists()


def test_force_keeps_the_foreign_hook_and_uninstall_restores_it(repo: Path, env: dict[str, str]) -> None:
    hook = hook_path(repo)
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_bytes(FOREIGN)
    hook.chmod(0o750)
    proc = hooks(repo, env, "--force")
    assert proc.returncode == 0, proc.stderr
    assert is_ours(hook)
    assert backup_path(repo).read_bytes() == FOREIGN
    assert "pre-push.envkit-backup" in proc.stdout

    # installing again over envkit's own hook keeps the backup as it is
    assert hooks(repo, env, "--force").returncode == 0
    assert backup_path(repo).read_bytes() == FOREIGN

    proc = hooks(repo, env, "--uninstall")
    assert proc.returncode == 0, proc.stderr
    assert hook.read_bytes() == FOREIGN
    assert stat.S_IMODE(hook.stat().st_mode) == 0o750
    assert not backup_path(repo).exists()
    assert "restored" in proc.stdout


def test_uninstall_removes_only_envkits_hook(repo: Path, env: dict[str, str]) -> None:
    hook = hook_path(repo)
    assert hooks(repo, env).returncode == 0
    proc = hooks(repo, env, "--uninstall")
    assert proc.returncode == 0, proc.stderr
    assert not hook.exists()
    assert "removed" in proc.stdout

    hook.write_bytes(FOREIGN)
    proc = hooks(repo, env, "--uninstall")
    assert proc.returncode != 0
    assert "not installed by envkit" in proc.stderr
    assert hook.read_bytes() == FOREIGN


def test_uninstall_with_no_hook_has_nothing_to_do(repo: Path, env: dict[str, str]) -> None:
    proc = hooks(repo, env, "--uninstall")
    assert proc.returncode == 0, proc.stderr
    assert "nothing to remove" in proc.stdout
    assert not hook_path(repo).exists()


def test_outside_a_git_repository(tmp_path: Path, env: dict[str, str]) -> None:
    elsewhere = tmp_path / "not-a-repo"
    elsewhere.mkdir()
    proc = hooks(elsewhere, env)
    assert proc.returncode != 0
    assert "not inside a git work tree" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(elsewhere.iterdir()) == []


def test_core_hooks_path_is_honoured(repo: Path, env: dict[str, str]) -> None:
    git(repo, env, "config", "core.hooksPath", ".githooks")
    sub = repo / "src" / "pkg"
    sub.mkdir(parents=True)
    proc = hooks(sub, env)  # from a subdirectory: the path is still the repository's
    assert proc.returncode == 0, proc.stderr
    hook = repo / ".githooks" / "pre-push"
    assert is_ours(hook)
    assert os.access(hook, os.X_OK)
    assert not hook_path(repo).exists()
    assert not (sub / ".githooks").exists()
    assert hooks(repo, env, "--uninstall").returncode == 0
    assert not hook.exists()


def test_install_from_a_subdirectory_goes_to_the_repository(repo: Path, env: dict[str, str]) -> None:
    sub = repo / "a" / "b"
    sub.mkdir(parents=True)
    assert hooks(sub, env).returncode == 0
    assert is_ours(hook_path(repo))


def test_git_push_runs_the_hook_and_a_failing_e2e_stops_the_push(
    tmp_path: Path, repo: Path, env: dict[str, str]
) -> None:
    """The hook is real: git runs it on push, and envkit e2e's failure (no stack file here) blocks it."""
    remote = tmp_path / "remote.git"
    git(tmp_path, env, "init", "-q", "--bare", str(remote))
    git(repo, env, "commit", "-q", "--allow-empty", "-m", "one")
    git(repo, env, "remote", "add", "origin", str(remote))
    assert hooks(repo, env, "--ttl", "30").returncode == 0

    push = subprocess.run(
        ["git", "push", "-q", "origin", "HEAD:refs/heads/main"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert push.returncode != 0
    assert "envkit: error:" in push.stderr and "envkit.toml" in push.stderr
    assert git(remote, env, "branch", "--list").stdout == ""  # nothing arrived

    git(repo, env, "push", "-q", "--no-verify", "origin", "HEAD:refs/heads/main")
    assert "main" in git(remote, env, "branch", "--list").stdout
