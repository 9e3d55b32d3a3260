"""``envkit e2e``: its argument errors (all found before any Docker work) and its JUnit summary."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from invoke import Exit

from envkit.e2e import junit_counts as _junit_counts
from envkit.tasks import _seconds

ENVKIT = Path(sys.executable).with_name("envkit")  # the console script of this venv


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A throwaway project with a minimal stack file (and no tests/e2e)."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "envkit.toml").write_text('[stack]\nname = "x"\n')
    return root


def envkit(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENVKIT_")}
    return subprocess.run([str(ENVKIT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--keep", "--ttl", "5"], ["--keep", "--ttl", "exclude each other"]),
        (["--workers", "x"], ["--workers 'x'", "'auto'"]),
        (["--ttl", "-1"], ["--ttl '-1'", "seconds"]),
    ],
    ids=["keep-and-ttl", "workers-x", "ttl-negative"],
)
def test_e2e_argument_errors_exit_2(project: Path, args: list[str], words: list[str]) -> None:
    proc = envkit(project, "e2e", *args)
    assert proc.returncode == 2, proc.stderr
    for word in words:
        assert word in proc.stderr
    assert proc.stderr.startswith("envkit: error: ")
    assert "Traceback" not in proc.stderr
    assert not (project / ".envkit").exists()  # nothing was started


def test_e2e_path_that_does_not_exist(project: Path) -> None:
    proc = envkit(project, "e2e", "--path", "tests/nowhere")
    assert proc.returncode == 2, proc.stderr
    assert str(project / "tests/nowhere") in proc.stderr
    assert "--path" in proc.stderr
    # the default path is checked the same way
    proc = envkit(project, "e2e")
    assert proc.returncode == 2, proc.stderr
    assert str(project / "tests/e2e") in proc.stderr


def test_e2e_outside_a_project_is_a_config_error(tmp_path: Path) -> None:
    proc = envkit(tmp_path, "e2e")
    assert proc.returncode == 1
    assert "envkit.toml" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("raw", ["-1", "-0.5", "nan", "inf", "-inf", "soon", "", "1e400"])
def test_ttl_that_is_not_a_number_of_seconds(raw: str) -> None:
    with pytest.raises(Exit) as caught:
        _seconds("--ttl", raw)
    assert caught.value.code == 2
    assert f"--ttl {raw!r}" in str(caught.value.message)


@pytest.mark.parametrize(("raw", "seconds"), [(None, None), ("0", 0.0), ("900", 900.0), ("2.5", 2.5)])
def test_ttl_in_seconds(raw: str | None, seconds: float | None) -> None:
    assert _seconds("--ttl", raw) == seconds


# --- the JUnit summary ---------------------------------------------------------------------------------


def junit(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "report.xml"
    path.write_text('<?xml version="1.0" encoding="utf-8"?>' + body)
    return path


@pytest.mark.parametrize(
    ("body", "summary"),
    [
        (
            '<testsuites name="pytest tests"><testsuite name="pytest" errors="0" failures="0" '
            'skipped="0" tests="12" time="1.0"></testsuite></testsuites>',
            "12 passed",
        ),
        (
            '<testsuites><testsuite name="pytest" errors="2" failures="1" skipped="3" tests="10">'
            "</testsuite></testsuites>",
            "4 passed, 1 failed, 2 errors, 3 skipped",
        ),
        (
            '<testsuites><testsuite tests="3" failures="1"/><testsuite tests="5" skipped="2"/></testsuites>',
            "5 passed, 1 failed, 2 skipped",
        ),
        ('<testsuite name="pytest" errors="0" failures="2" skipped="0" tests="2"/>', "0 passed, 2 failed"),
        ("<testsuites></testsuites>", "0 passed"),
    ],
    ids=["all-passed", "mixed", "two-suites", "bare-testsuite", "empty"],
)
def test_junit_counts(tmp_path: Path, body: str, summary: str) -> None:
    assert _junit_counts(junit(tmp_path, body)) == summary


@pytest.mark.parametrize("content", [None, "", "<testsuites><testsuite", "not xml at all"])
def test_junit_counts_without_a_readable_report(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "e2e-junit.xml"
    if content is not None:
        path.write_text(content)
    assert _junit_counts(path) == "no report"


def test_junit_counts_of_a_report_pytest_wrote(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(
        textwrap.dedent(
            """
            import pytest

            def test_ok(): pass
            def test_ok_too(): pass
            def test_bad(): assert False
            @pytest.mark.skip
            def test_skipped(): pass
            @pytest.fixture
            def broken(): raise RuntimeError
            def test_error(broken): pass
            """
        )
    )
    report = tmp_path / "report.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junit-xml={report}"],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert _junit_counts(report) == "2 passed, 1 failed, 1 errors, 1 skipped"
