"""The defects a fault-injection run found, each with the test that keeps it fixed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
from pathlib import Path

import psutil
import pytest
from conftest import remove_stack_images
from integration.stack_fixtures import StackProject, read_line, release

pytestmark = pytest.mark.docker


def cli_json(sp: StackProject, *args: str, **env: str) -> dict[str, object]:
    proc = sp.cli(*args, "--json", **env)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def test_one_state_dir_holds_one_stack(stack_project: StackProject, tmp_path: Path) -> None:
    """Two projects pointed at one ENVKIT_STATE_DIR: the second is refused, naming the first."""
    x = stack_project
    y_root = tmp_path / "other-project"
    shutil.copytree(x.root, y_root, ignore=shutil.ignore_patterns(".envkit"))
    (y_root / "envkit.toml").write_text(
        (y_root / "envkit.toml").read_text().replace(x.project.stack, "other")
    )
    shared = tmp_path / "shared-state"
    up = x.cli("up", "--service", "web", ENVKIT_STATE_DIR=str(shared))
    assert up.returncode == 0, up.stderr
    try:
        env = {**x.env(), "ENVKIT_ROOT": str(y_root), "ENVKIT_STATE_DIR": str(shared)}
        import subprocess
        import sys

        def y(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "envkit", *args],
                cwd=y_root,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )

        refused = y("up", "--service", "web")
        assert refused.returncode == 1, refused.stdout
        assert "already holds stack" in refused.stderr and str(x.root) in refused.stderr
        assert "Traceback" not in refused.stderr
        assert x.client.containers(all=True, filters={"label": "envkit.project=other"}) == []

        # Nor may the other project's down, down --all or status touch (or show) the first stack.
        def first_stack() -> tuple[bytes, list[str], list[str]]:
            containers = x.client.containers(filters={"label": f"envkit.project={x.project.stack}"})
            return (
                (shared / "state.json").read_bytes(),
                sorted(p.name for p in (shared / "holders").iterdir()),  # the pin of `envkit up`
                sorted(c["Id"] for c in containers),
            )

        before = first_stack()
        assert len(before[1]) == 1 and len(before[2]) == 1
        for args in (("status",), ("status", "--json"), ("down",), ("down", "--all")):
            refused = y(*args)
            assert refused.returncode == 1, (args, refused.stdout)
            assert "already holds stack" in refused.stderr and str(x.root) in refused.stderr, refused.stderr
            assert "Traceback" not in refused.stderr and refused.stdout == ""
            assert first_stack() == before, args
    finally:
        assert x.cli("down", "--all", ENVKIT_STATE_DIR=str(shared)).returncode == 0
        remove_stack_images(x.client, "other")  # what the refused project built before it was refused
    assert x.client.containers(all=True, filters={"label": f"envkit.project={x.project.stack}"}) == []


def test_a_holder_file_of_the_wrong_shape_breaks_nothing(stack_project: StackProject) -> None:
    sp = stack_project
    holder = sp.holder("--service", "web")
    read_line(holder)
    bad = sp.state_dir / "holders" / "session-1-2.json"
    bad.write_text(json.dumps({"id": "session-1-2", "kind": "session", "pid": "abc", "since": 1.0}))
    status = sp.cli("status")
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
    down = sp.cli("down")
    assert down.returncode == 0  # the process still holds it: it stays
    holder.kill()
    holder.communicate(timeout=30)
    took = sp.wait_until(sp.gone, 15, "the reaper removes the stack despite the bad file")
    assert took < 10
    assert (sp.state_dir / "holders" / "session-1-2.bad").exists()  # set aside, not lost
    assert not bad.exists()
    said = status.stderr + down.stderr + (sp.state_dir / "reaper.log").read_text()
    assert "set aside" in said and "session-1-2" in said, said


def test_envkits_files_are_private(stack_project: StackProject) -> None:
    sp = stack_project
    sp.state_dir.mkdir(mode=0o775)
    sp.state_dir.chmod(0o775)  # as a copy or a loose umask might leave it
    for name in ("lock.owner", "reaper.log"):  # left readable by an older envkit
        (sp.state_dir / name).write_text("")
        (sp.state_dir / name).chmod(0o644)
    holder = sp.holder("--service", "web")
    read_line(holder)
    try:

        def mode(path: Path) -> int:
            return stat.S_IMODE(path.stat().st_mode)

        assert mode(sp.state_dir) == 0o700
        for path in (sp.state_dir / "lock.owner", sp.state_dir / "state.json", sp.state_dir / "reaper.log"):
            assert mode(path) & 0o077 == 0, path
        for directory in (sp.state_dir / "manifests", sp.state_dir / "holders"):
            assert mode(directory) == 0o700, directory
        locks = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "envkit" / "locks"
        for lock in locks.glob("*.lock"):
            assert mode(lock) & 0o077 == 0, lock
    finally:
        code, err = release(holder)
        assert code == 0, err
    sp.wait_until(sp.gone, 15, "the stack goes")


def test_a_secret_build_arg_stays_out_of_envkits_files(stack_project: StackProject) -> None:
    sp = stack_project
    toml = (sp.root / "envkit.toml").read_text()
    (sp.root / "envkit.toml").write_text(
        toml.replace("[images.bb]\n", '[images.bb]\nargs = { API_TOKEN = "s3cr3t-v4lue", MODE = "test" }\n')
    )
    built = sp.cli("build")
    assert built.returncode == 0, built.stderr
    for path in sp.state_dir.rglob("*"):
        if path.is_file():
            assert b"s3cr3t-v4lue" not in path.read_bytes(), path
    manifest = next((sp.state_dir / "manifests" / "bb").glob("*.json"))
    args = json.loads(manifest.read_text())["args"]
    assert args["MODE"] == "test" and args["API_TOKEN"].startswith("sha256:")
    (sp.root / "envkit.toml").write_text(
        toml.replace("[images.bb]\n", '[images.bb]\nargs = { API_TOKEN = "another", MODE = "test" }\n')
    )
    explained = sp.cli("build", "--explain")
    assert "build arg changed: API_TOKEN: (a secret) -> (a secret)" in explained.stdout, explained.stdout


def test_down_all_during_a_start_is_reported_as_a_stop(stack_project: StackProject) -> None:
    """A holder whose start is stopped by `envkit down --all` hears StackStopped, not
    'ServiceUnhealthy: exit 137', nor a DaemonError 404 once it resumes."""
    sp = stack_project
    holder = sp.holder("--service", "web", ENVKIT_FAULT="launch.created:stop")
    sp.wait_until(lambda: psutil.Process(holder.pid).status() == psutil.STATUS_STOPPED, 60, "it stops")
    assert sp.cli("down", "--all").returncode == 0
    holder.send_signal(signal.SIGCONT)
    line = read_line(holder)
    assert line.get("error") == "StackStopped", line
    holder.communicate(timeout=30)
    sp.wait_until(sp.gone, 15, "nothing left")


def test_gc_in_one_checkout_keeps_another_checkouts_current_images(
    stack_project: StackProject, tmp_path: Path
) -> None:
    a = stack_project
    b_root = tmp_path / "second-checkout"
    shutil.copytree(a.root, b_root, ignore=shutil.ignore_patterns(".envkit"))
    (b_root / "images" / "bb" / "extra.txt").write_text("only in the second checkout\n")
    (b_root / "images" / "bb" / "Dockerfile").write_text(
        (a.root / "images/bb/Dockerfile").read_text() + "COPY extra.txt /\n"
    )
    import subprocess
    import sys

    env_b = {**a.env(), "ENVKIT_ROOT": str(b_root)}
    built_b = subprocess.run(
        [sys.executable, "-m", "envkit", "build", "--json"],
        cwd=b_root,
        env=env_b,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert built_b.returncode == 0, built_b.stderr
    tag_b = json.loads(built_b.stdout)[0]["tag"]
    built_a = json.loads(a.cli("build", "--json").stdout)[0]["tag"]
    assert tag_b != built_a
    gc = cli_json(a, "gc")
    assert tag_b not in gc["removed"], gc
    a.client.inspect_image(tag_b)  # still there
    shutil.rmtree(b_root)  # that checkout is gone: its images are no one's now
    gc = cli_json(a, "gc")
    assert tag_b in gc["removed"], gc


def test_a_state_dir_every_user_may_write_to_is_refused(stack_project: StackProject) -> None:
    """Others could have planted holder files, a state, or links there: it is not used at all."""
    sp = stack_project
    sp.state_dir.mkdir()
    sp.state_dir.chmod(0o777)
    for args in (("up", "--service", "web"), ("status",), ("down", "--all")):
        refused = sp.cli(*args)
        assert refused.returncode == 1, (args, refused.stdout, refused.stderr)
        assert f"refusing the state directory {sp.state_dir}: every user may write to it" in refused.stderr
        assert "fix:" in refused.stderr and "Traceback" not in refused.stderr
    assert sorted(p.name for p in sp.state_dir.iterdir()) == []
    assert sp.gone()


def test_a_state_file_that_is_a_directory_is_one_clear_error(stack_project: StackProject) -> None:
    sp = stack_project
    path = sp.state_dir / "state.json"
    path.mkdir(parents=True)
    for args in (("up", "--service", "web"), ("down", "--all")):
        failed = sp.cli(*args)
        assert failed.returncode == 1, (args, failed.stdout, failed.stderr)
        assert f"{path} is corrupt: it is a directory" in failed.stderr and f"rm -r {path}" in failed.stderr
        assert "Traceback" not in failed.stderr
    assert sp.gone()
    path.rmdir()  # as the fix says
    assert sp.cli("up", "--service", "web").returncode == 0
    assert sp.cli("down").returncode == 0
    sp.wait_until(sp.gone, 15, "the stack goes")


def test_status_says_not_running_once_every_container_has_exited(stack_project: StackProject) -> None:
    sp = stack_project
    up = sp.cli("up")
    assert up.returncode == 0, up.stderr
    assert cli_json(sp, "status")["running"] is True
    for c in sp.containers():
        sp.client.kill(c["Id"])
    sp.wait_until(lambda: all(c["State"] == "exited" for c in sp.containers()), 30, "the containers exit")
    status = cli_json(sp, "status")
    assert status["running"] is False, status
    assert {s["status"] for s in status["services"].values()} == {"exited"}
    assert "not running" in sp.cli("status").stdout
    assert sp.cli("down").returncode == 0
    sp.wait_until(sp.gone, 15, "down removes the exited containers")
