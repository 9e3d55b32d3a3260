"""Use envkit as a user who installed the wheel would: python check_installed.py CHECKOUT

Run with the Python of a fresh virtualenv into which only the built wheel was
installed, from a folder outside the checkout (`.ci/package-check` does this).
It fails (exit 1, saying what) if the installed package is not the whole
package: a module of the checkout that does not import from the install, a
version that disagrees, a missing command or plugin, or a stack that cannot
be built and used from a temporary folder.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import uuid
from pathlib import Path

DISTRIBUTION = "envkit-docker"


def fail(message: str) -> None:
    print(f"package check: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def ok(message: str) -> None:
    print(f"package check: ok: {message}", flush=True)


def modules_of(checkout: Path) -> list[str]:
    names = []
    for path in sorted((checkout / "envkit").rglob("*.py")):
        parts = list(path.relative_to(checkout).with_suffix("").parts)
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def check_imports(checkout: Path) -> None:
    expected = modules_of(checkout)
    if len(expected) < 20:
        fail(f"found only {len(expected)} modules in {checkout}/envkit: is that the checkout?")
    for name in expected:
        if name == "envkit.__main__":
            continue  # running it is the CLI, checked below
        try:
            module = importlib.import_module(name)
        except ImportError as err:
            fail(f"{name} (a module of the checkout) does not import from the installed wheel: {err}")
        where = Path(module.__file__ or "").resolve()
        if checkout.resolve() in where.parents:
            fail(f"{name} was imported from the checkout ({where}), not from the install")
    typed = Path(importlib.import_module("envkit").__file__ or "").parent / "py.typed"
    if not typed.is_file():
        fail("py.typed is not installed")
    ok(f"all {len(expected)} modules import from the install, py.typed is there")


def check_version(checkout: Path, here: Path) -> None:
    import envkit

    source = re.search(r'__version__ = "([^"]+)"', (checkout / "envkit" / "__init__.py").read_text())
    metadata = importlib.metadata.version(DISTRIBUTION)
    cli = run(sys.executable, "-m", "envkit", "--version", cwd=here)
    script = shutil.which("envkit", path=str(Path(sys.executable).parent))
    if script is None:
        fail("the envkit command was not installed")
    command = run(script, "--version", cwd=here)
    versions = {
        "checkout": source[1] if source else "?",
        "wheel metadata": metadata,
        "envkit.__version__": envkit.__version__,
        "python -m envkit --version": cli.stdout.strip().removeprefix("envkit "),
        "envkit --version": command.stdout.strip().removeprefix("envkit "),
    }
    if len(set(versions.values())) != 1:
        fail(f"the versions disagree: {versions}")
    ok(f"one version everywhere: {metadata}")


def check_plugin(here: Path) -> None:
    helped = run(sys.executable, "-m", "pytest", "--help", cwd=here)
    if "envkit: the shared service stack" not in helped.stdout or "--envkit-keep" not in helped.stdout:
        fail("pytest --help does not show envkit's option group: the plugin's entry point is missing")
    ok("pytest --help shows envkit's options")


def busybox_rootfs() -> bytes:
    busybox = Path("/bin/busybox")
    if not busybox.is_file():
        fail("the end-to-end check needs Debian's busybox-static (/bin/busybox)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("bin", "tmp", "etc"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        tar.add(str(busybox), arcname="bin/busybox")
        for applet in ("sh", "httpd", "echo", "cat"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return buf.getvalue()


def check_end_to_end(here: Path) -> None:
    """`envkit build` and a plugin test from a temporary folder, against a busybox stack."""
    stack = f"pkgcheck-{uuid.uuid4().hex[:8]}"
    base = f"envkit-pkgcheck/busybox:{stack}"
    project = here / "project"
    (project / "images" / "web").mkdir(parents=True)
    imported = subprocess.run(
        [
            "docker",
            "import",
            "--change",
            f"LABEL envkit.project={stack}",
            "--change",
            'CMD ["sh"]',
            "-",
            base,
        ],
        input=busybox_rootfs(),
        capture_output=True,
        timeout=120,
    )
    if imported.returncode != 0:
        fail(f"docker import of the busybox base failed: {imported.stderr.decode(errors='replace')}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENVKIT_")}
    env["ENVKIT_GRACE"] = "0"
    envkit = str(Path(sys.executable).parent / "envkit")
    try:
        (project / "envkit.toml").write_text(
            textwrap.dedent(f"""\
                [stack]
                name = "{stack}"
                pull = "never"

                [images.web]

                [services.web]
                image = "web"
                ports = [8000]
                command = ["httpd", "-f", "-p", "8000", "-h", "/site"]
                healthcheck = {{ http = "/index.html", port = 8000 }}
                """)
        )
        (project / "images" / "web" / "Dockerfile").write_text(f"FROM {base}\nCOPY index.html /site/\n")
        (project / "images" / "web" / "index.html").write_text("hello from the wheel\n")
        (project / "test_smoke.py").write_text(
            textwrap.dedent("""\
                import urllib.request

                import pytest

                pytestmark = pytest.mark.services("web")


                def test_web_answers(envkit_stack):
                    with urllib.request.urlopen(envkit_stack.url("web", 8000) + "/index.html") as page:
                        assert page.read() == b"hello from the wheel\\n"
                """)
        )
        built = run(envkit, "build", "--json", cwd=project, env=env)
        if built.returncode != 0:
            fail(f"envkit build failed:\n{built.stdout}\n{built.stderr}")
        if [r["status"] for r in json.loads(built.stdout)] != ["built"]:
            fail(f"envkit build did not build the image: {built.stdout}")
        tested = run(
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "test_smoke.py",
            cwd=project,
            env=env,
        )
        if tested.returncode != 0 or "1 passed" not in tested.stdout:
            fail(f"the plugin test did not pass:\n{tested.stdout}\n{tested.stderr}")
        again = run(envkit, "build", "--json", cwd=project, env=env)
        if [r["status"] for r in json.loads(again.stdout or "[]")] != ["cached"]:
            fail(f"a second envkit build rebuilt: {again.stdout}\n{again.stderr}")
        ok("envkit build, a plugin test, and a cached rebuild, from a temporary folder")
    finally:
        run(envkit, "down", "--all", cwd=project, env=env)
        for _ in range(5):  # children first: a parent goes in the next pass
            images = run("docker", "images", "-q", "--filter", f"label=envkit.project={stack}", cwd=here)
            ids = sorted(set(images.stdout.split()))
            if not ids:
                break
            for image in ids:
                run("docker", "rmi", "--force", image, cwd=here)


def main() -> None:
    if len(sys.argv) != 2:
        print("usage: python check_installed.py CHECKOUT", file=sys.stderr)
        sys.exit(2)
    checkout = Path(sys.argv[1]).resolve()
    with tempfile.TemporaryDirectory(prefix="envkit-installed-") as tmp:
        here = Path(tmp)
        os.chdir(here)
        sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != checkout]
        check_imports(checkout)
        check_version(checkout, here)
        check_plugin(here)
        check_end_to_end(here)


if __name__ == "__main__":
    main()
