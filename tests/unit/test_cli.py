"""The console script and the Invoke collection are the same tasks."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import envkit
from envkit.tasks import ns


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "envkit", *args], capture_output=True, text=True, timeout=60)


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"envkit {envkit.__version__}"


def test_the_collection_is_the_console_script() -> None:
    assert {"build", "gc"} <= set(ns.task_names)
    proc = run("--list")
    assert proc.returncode == 0
    for name in ns.task_names:
        assert name in proc.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["build", "--no-such-option"], "no-such-option"),
        (["build", "--jobs", "x"], "--jobs 'x' is not a whole number"),
        (["build", "--jobs", "0"], "--jobs '0' is not a whole number"),
        (["build", "--pull", "sometimes"], "not a pull policy"),
    ],
)
def test_bad_arguments_are_usage_errors_without_traceback(args: list[str], words: str) -> None:
    proc = run(*args)
    assert proc.returncode != 0
    assert words in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [["gc", "--help"], ["--help"], ["--list"], ["build", "--help"]])
def test_a_closed_stdout_ends_quietly(args: list[str]) -> None:
    """`envkit gc --help | head -1`: the reader is gone before envkit writes; no traceback."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "envkit", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.returncode == 141


def test_importing_the_cli_loads_no_command_s_machinery() -> None:
    """Every command pays for the imports of `envkit.cli`; each command imports what it runs."""
    heavy = [
        "docker",
        "requests",
        "rich",
        "psutil",
        "filelock",
        "http.client",
        "tarfile",
        "envkit.images.build",
        "envkit.stack.stack",
        "envkit.config.toml",
        "envkit.docker.engine",
    ]
    code = f"import sys, envkit.cli; print([m for m in {heavy!r} if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_command_that_exits_with_a_code_into_a_closed_pipe_ends_quietly() -> None:
    """Not only a normal return: a command that printed, then exits 1 (`relock --check | head`),
    into a closed pipe, ends with its code and no 'Exception ignored' at shutdown."""
    import os

    script = (
        "import sys\n"
        "import envkit.cli as cli\n"
        "def run():\n"
        "    print('stale: base')  # buffered: the pipe is found closed only at the flush\n"
        "    sys.exit(1)\n"
        "cli.program.run = run\n"
        "cli.main()\n"
    )
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        proc = subprocess.run(
            [sys.executable, "-c", script],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            env=env,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 1
    assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_live_view_with_nothing_to_show_draws_nothing_and_loads_no_rich() -> None:
    code = (
        "import io, sys\n"
        "from envkit.progress import Live\n"
        "out = io.StringIO()\n"
        "with Live(out):\n"
        "    pass\n"
        "print(repr(out.getvalue()), 'rich' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "'' False", proc.stderr


# --- the front door -------------------------------------------------------------------------------

INVOKE_ONLY = [
    "--prompt-for-sudo-password",
    "--write-pyc",
    "--echo",
    "--pty",
    "--dry",
    "--command-timeout",
    "--warn-only",
    "--config",
    "--debug",
    "--hide",
    "--list-depth",
    "--list-format",
    "--collection",
    "--search-root",
    "--no-dedupe",
    "Core options",
]


@pytest.mark.parametrize("args", [[], ["--help"], ["-h"]])
def test_top_level_help_is_envkits_commands_and_options_only(args: list[str]) -> None:
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"envkit {envkit.__version__}: ")
    listed = {line.split()[0] for line in lines if line.startswith("  ") and not line.startswith("   ")}
    for name in ns.task_names:
        assert name in listed, f"{name} missing from:\n{proc.stdout}"
        summary = (ns[name].__doc__ or "").strip().splitlines()[0]
        assert summary.split()[0] in proc.stdout
    for option in INVOKE_ONLY:
        assert option not in proc.stdout, option
    for option in ("--help", "--version", "--print-completion-script"):
        assert option in proc.stdout
    assert proc.stdout.index("Commands:") < proc.stdout.index("Options:")  # the commands come first


def test_a_command_keeps_its_own_help() -> None:
    proc = run("build", "--help")
    assert proc.returncode == 0
    assert "--explain" in proc.stdout and "--jobs" in proc.stdout and "--pull" in proc.stdout


@pytest.mark.parametrize("args", [["build", "--help"], ["--help", "gc"], ["down", "-h"]])
def test_a_commands_help_is_envkits_usage_not_invokes(args: list[str]) -> None:
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr
    command = next(a for a in args if not a.startswith("-"))
    lines = proc.stdout.splitlines()
    assert lines[0] == f"Usage: envkit {command} [options]", lines[0]
    summary = (ns[command].__doc__ or "").strip().splitlines()[0]
    assert lines[2].strip() == summary
    for invoke_only in ("--core-opts", "other tasks here", "Docstring:"):
        assert invoke_only not in proc.stdout, invoke_only


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["-T", "abc"], "envkit: error: envkit has no option '-T'"),
        (["-D", "abc"], "envkit: error: envkit has no option '-D'"),
        (["-F", "nosuch"], "envkit: error: envkit has no option '-F'"),
        (["-f", "/etc/passwd"], "envkit: error: envkit has no option '-f'"),
        (["--echo", "build"], "envkit: error: envkit has no option '--echo'"),
        (
            ["statsu"],
            "envkit: error: 'statsu' is not an envkit command; did you mean 'status'? (envkit --help",
        ),
        (
            ["bulid"],
            "envkit: error: 'bulid' is not an envkit command; did you mean 'build'? (envkit --help",
        ),
        (["up", "--servce", "api"], "envkit: error: up has no option '--servce'; did you mean '--service'?"),
        (["build", "--no-such-option"], "envkit: error: build has no option '--no-such-option'"),
        (["build", "--jobs"], "envkit: error: --jobs needs a value"),
        (["--help", "statsu"], "envkit: error: 'statsu' is not an envkit command; did you mean 'status'?"),
        (["--print-completion-script", "tcsh"], "envkit: error: no completion script for 'tcsh'"),
    ],
)
def test_a_bad_invocation_is_one_line_and_exit_2(args: list[str], line: str) -> None:
    proc = run(*args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith(line), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shell_completion_scripts_and_candidates(shell: str) -> None:
    script = run("--print-completion-script", shell)
    assert script.returncode == 0 and re.search(r"envkit .*--complete", script.stdout), script.stdout
    candidates = run("--complete", "--", "envkit", "st").stdout.split()
    assert "status" in candidates
    options = run("--complete", "--", "envkit", "build", "--").stdout.split()
    assert {"--explain", "--json", "--jobs"} <= set(options)
