"""Which engine: DOCKER_HOST, else DOCKER_CONTEXT, else the docker CLI's current context, else the
default socket; a context's endpoint is read where the docker CLI keeps it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from envkit.docker.transport import DEFAULT_HOST, discover
from envkit.errors import ConfigError


def make_context(config_dir: Path, name: str, host: str, *, tls: bool = False) -> None:
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = config_dir / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(
        json.dumps(
            {"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": False}}}
        )
    )
    if tls:
        (config_dir / "contexts" / "tls" / digest / "docker").mkdir(parents=True)


def env(config_dir: Path, **more: str) -> dict[str, str]:
    return {"DOCKER_CONFIG": str(config_dir), **more}


def test_nothing_set_is_the_default_socket(tmp_path: Path) -> None:
    found = discover(env(tmp_path))
    assert found.host == DEFAULT_HOST == "unix:///var/run/docker.sock"
    assert found.source == "the default socket" and found.context is None


def test_docker_host_wins_over_everything(tmp_path: Path) -> None:
    make_context(tmp_path, "colima", "unix:///colima.sock")
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "colima"}))
    found = discover(env(tmp_path, DOCKER_HOST="tcp://10.0.0.1:2375", DOCKER_CONTEXT="colima"))
    assert (found.host, found.source) == ("tcp://10.0.0.1:2375", "DOCKER_HOST")


def test_docker_context_names_the_context(tmp_path: Path) -> None:
    make_context(tmp_path, "colima", "unix:///home/u/.colima/docker.sock")
    make_context(tmp_path, "other", "unix:///other.sock")
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "other"}))
    found = discover(env(tmp_path, DOCKER_CONTEXT="colima"))
    assert found.host == "unix:///home/u/.colima/docker.sock"
    assert found.context == "colima" and "DOCKER_CONTEXT" in found.source and "colima" in found.source
    assert found.socket_path == "/home/u/.colima/docker.sock"


def test_the_current_context_of_the_cli_config(tmp_path: Path) -> None:
    make_context(tmp_path, "orbstack", "unix:///orb.sock", tls=True)
    (tmp_path / "config.json").write_text(json.dumps({"auths": {}, "currentContext": "orbstack"}))
    found = discover(env(tmp_path))
    assert found.host == "unix:///orb.sock"
    assert "current context" in found.source and str(tmp_path / "config.json") in found.source
    assert found.tls_dir == tmp_path / "contexts" / "tls" / hashlib.sha256(b"orbstack").hexdigest() / "docker"


def test_the_default_context_is_the_default_socket(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "default"}))
    assert discover(env(tmp_path)).host == DEFAULT_HOST
    assert discover(env(tmp_path, DOCKER_CONTEXT="default")).host == DEFAULT_HOST


def test_the_docker_config_defaults_to_home(tmp_path: Path) -> None:
    make_context(tmp_path / ".docker", "podman", "unix:///run/podman.sock")
    (tmp_path / ".docker" / "config.json").write_text(json.dumps({"currentContext": "podman"}))
    assert discover({"HOME": str(tmp_path)}).host == "unix:///run/podman.sock"


def test_a_context_that_does_not_exist_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        discover(env(tmp_path, DOCKER_CONTEXT="nosuch"))
    assert "'nosuch'" in str(caught.value) and "docker context" in str(caught.value)
    assert "DOCKER_HOST" in caught.value.fix


@pytest.mark.parametrize("text", ["{not json", '{"Endpoints": {}}', '{"Endpoints": {"docker": {}}}'])
def test_a_broken_context_is_a_clear_error(tmp_path: Path, text: str) -> None:
    make_context(tmp_path, "broken", "unix:///x.sock")
    meta = next((tmp_path / "contexts" / "meta").iterdir()) / "meta.json"
    meta.write_text(text)
    with pytest.raises(ConfigError, match="no usable endpoint"):
        discover(env(tmp_path, DOCKER_CONTEXT="broken"))


def test_an_unreadable_cli_config_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(ConfigError, match="cannot be read"):
        discover(env(tmp_path))
