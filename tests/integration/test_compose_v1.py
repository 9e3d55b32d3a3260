"""A second opinion on envkit's reading of compose files: Debian's docker-compose v1.

For each project of tests/compose_cases.py that v1 understands, `docker-compose config`
(v1 resolves env files, paths and short syntaxes too) must agree with `envkit config --json`
on every service's image or build, ports, environment, command, entrypoint, depends_on,
health check and mounts. Where v1 disagrees it is because it reads YAML 1.1 (``22:22`` is
1342 to it): those places are written down, and v1 must disagree exactly there.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from compose_cases import CASES, Case

V1 = shutil.which("docker-compose")
pytestmark = pytest.mark.skipif(V1 is None, reason="Debian's docker-compose (v1) is not installed")
BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "ENVKIT_"))}
# What v1 reads otherwise, because it reads YAML 1.1: (case, service) -> {field: v1's value}.
YAML_11 = {("ports", "web"): {"ports": [80, 443, 9000, 9100, 9101, 1342, 7000]}}


def v1_config(case: Case, root: Path) -> dict[str, Any]:
    from ruamel.yaml import YAML

    files = [root / f for f in (case.env.get("COMPOSE_FILE") or "compose.yaml").split(":")]
    for f in files:  # v1 does not know the top-level name:
        f.write_text("".join(line for line in f.read_text().splitlines(True) if not line.startswith("name:")))
    env = {**BASE_ENV, **{k: v for k, v in case.env.items() if k != "COMPOSE_FILE"}}
    args = [str(V1), *[a for f in files for a in ("-f", str(f))], "config"]
    proc = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = YAML(typ="safe").load(io.StringIO(proc.stdout))
    return data


def envkit_config(case: Case, root: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "envkit", "config", "--json"],
        cwd=root,
        env={**BASE_ENV, **case.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def unescaped(value: Any) -> Any:
    """v1 writes its resolved config escaped again for reuse ($ as $$)."""
    if isinstance(value, str):
        return value.replace("$$", "$")
    if isinstance(value, list):
        return [unescaped(v) for v in value]
    if isinstance(value, dict):
        return {k: unescaped(v) for k, v in value.items()}
    return value


def v1_ports(ports: list[Any]) -> list[int]:
    out: list[int] = []
    for p in ports:
        if isinstance(p, dict):
            target, protocol = int(p["target"]), p.get("protocol", "tcp")
        else:
            spec, _, protocol = str(p).partition("/")
            target, protocol = int(spec.rsplit(":", 1)[-1]), protocol or "tcp"
        if protocol == "tcp" and target not in out:
            out.append(target)
    return out


def v1_mounts(service: dict[str, Any]) -> list[tuple[str, str | None, str, bool]]:
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out.append((v["type"], v.get("source"), v["target"], bool(v.get("read_only"))))
            continue
        parts = str(v).split(":")
        if len(parts) == 1:
            out.append(("volume", None, parts[0], False))
        else:
            kind = "bind" if parts[0].startswith("/") else "volume"
            out.append((kind, parts[0], parts[1], "ro" in (parts[2].split(",") if len(parts) > 2 else [])))
    out += [("tmpfs", None, str(t).split(":")[0], False) for t in service.get("tmpfs", [])]
    return out


def v1_healthcheck(check: dict[str, Any] | None) -> dict[str, Any]:
    if check is None or "test" not in check:
        return {"kind": "image"}
    test = check["test"]
    if check.get("disable") or test == ["NONE"]:
        return {"kind": "none"}
    if isinstance(test, str):
        return {"kind": "cmd", "cmd": ["/bin/sh", "-c", test]}
    if test[0] == "CMD-SHELL":
        return {"kind": "cmd", "cmd": ["/bin/sh", "-c", " ".join(test[1:])]}
    return {"kind": "cmd", "cmd": test[1:]}


def words(value: Any) -> list[str] | None:
    if value is None:
        return None
    return (shlex.split(value) if isinstance(value, str) else [str(v) for v in value]) or None


def v1_files(service: dict[str, Any], top: dict[str, Any]) -> list[tuple[str, str | None, str, bool]]:
    """Secrets (at /run/secrets/) and configs (at /) as the read-only binds of their files."""
    out: list[tuple[str, str | None, str, bool]] = []
    for key, prefix in (("secrets", "/run/secrets/"), ("configs", "/")):
        for item in service.get(key, []):
            entry = {"source": item} if isinstance(item, str) else item
            target = str(entry.get("target") or entry["source"])
            target = target if target.startswith("/") else prefix + target
            out.append(("bind", top[key][entry["source"]]["file"], target, True))
    return out


def mount_key(mount: tuple[str, str | None, str, bool]) -> tuple[str, str, str, bool]:
    return (mount[0], mount[1] or "", mount[2], mount[3])


def as_v1_sees(service: dict[str, Any], ours: dict[str, Any], images: dict[str, Any]) -> dict[str, Any]:
    """Our service in the terms v1's config output allows comparing."""
    seen: dict[str, Any] = {
        "ports": ours["ports"],
        "environment": ours["environment"],
        "command": ours["command"],
        "entrypoint": ours["entrypoint"] or None,
        "depends_on": ours["depends_on"],
        "healthcheck": ours["healthcheck"],
        "mounts": sorted(
            ((m["type"], m.get("source"), m["target"], m["read_only"]) for m in ours["volumes"]),
            key=mount_key,
        ),
    }
    if ours["built"] and "build" in service:
        image = images[ours["image"]]
        seen["build"] = {
            "context": image["context"],
            "dockerfile": image["dockerfile"],
            "target": image["target"],
        }
    elif ours["built"]:  # the image another service builds and tags so: v1 names it by that tag
        seen["image"] = (
            service["image"] if service["image"] in images[ours["image"]]["tags"] else ours["image"]
        )
    else:
        seen["image"] = ours["image"]
    return seen


def from_v1(service: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    env = {k: "" if v is None else str(v) for k, v in (service.get("environment") or {}).items()}
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        depends = {d: {"condition": "service_started"} for d in depends}
    seen: dict[str, Any] = {
        "ports": v1_ports(service.get("ports", [])),
        "environment": env,
        "command": words(service.get("command")),
        "entrypoint": words(service.get("entrypoint")) or None,
        "depends_on": {d: c["condition"] for d, c in depends.items()},
        "healthcheck": v1_healthcheck(service.get("healthcheck")),
        "mounts": sorted(v1_mounts(service) + v1_files(service, top), key=mount_key),
    }
    if "build" in service:
        build = service["build"]
        context = Path(build["context"])
        seen["build"] = {
            "context": str(context),
            "dockerfile": str((context / build.get("dockerfile", "Dockerfile")).resolve()),
            "target": build.get("target"),
        }
    else:
        seen["image"] = service["image"]
    return seen


V1_CASES = [c for c in CASES if c.v1]


@pytest.mark.parametrize("case", V1_CASES, ids=[c.name for c in V1_CASES])
def test_docker_compose_v1_reads_the_file_as_envkit_does(case: Case, tmp_path: Path) -> None:
    root = (tmp_path / case.name).resolve()
    case.write(root)
    ours = envkit_config(case, root)
    theirs = unescaped(v1_config(case, root))
    assert set(ours["services"]) == set(theirs["services"])
    for name, service in theirs["services"].items():
        seen = from_v1(service, theirs)
        expected = as_v1_sees(service, ours["services"][name], ours["images"])
        for field, v1_value in YAML_11.get((case.name, name), {}).items():
            assert seen[field] == v1_value  # v1 reads YAML 1.1 here...
            assert expected[field] != v1_value  # ...and envkit does not
            seen[field] = expected[field]
        assert seen == expected, name
    # the build args v1 resolved (it keeps an unset one as "", compose v2 and envkit leave it out)
    for name, service in theirs["services"].items():
        if "build" in service and ours["services"][name]["built"]:
            args = {k: str(v) for k, v in (service["build"].get("args") or {}).items() if v not in ("", None)}
            assert ours["images"][ours["services"][name]["image"]]["args"] == args


def test_there_are_cases_for_v1() -> None:
    assert len(V1_CASES) >= 5
