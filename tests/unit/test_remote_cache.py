"""The remote cache's pure parts and its use of the engine, with fakes: which cache is in use,
what a reference is, lookups all at once, a refused entry, what a push may leak, which misses
an ensure makes, and the engine's registry calls against a scripted engine."""

from __future__ import annotations

import json
import logging
import pickle
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_engine import Engine, daemon_for, engine  # noqa: F401 (the scripted engine fixture)

from envkit.config.find import load
from envkit.config.model import ImageSpec, StackConfig
from envkit.config.toml import repository_problem
from envkit.docker import labels
from envkit.errors import ConfigError, DaemonError, EngineStreamError, PushError
from envkit.images import build, cache
from envkit.images.digest import Inputs
from envkit.progress import Silent
from envkit.settings import Settings

KEY = "ab" * 32


def stack(tmp_path: Path, extra: str = "", **images: str) -> StackConfig:
    """A stack file with ``images`` (name -> Dockerfile) and ``extra`` under [stack]."""
    text = f'[stack]\nname = "demo"\n{extra}\n'
    for name, dockerfile in images.items():
        text += f"[images.{name}]\n"
        (tmp_path / "images" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "images" / name / "Dockerfile").write_text(dockerfile)
    (tmp_path / "envkit.toml").write_text(text)
    return load(tmp_path, environ={})


# -- which cache, and its references --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("ghcr.io/team/envkit", None),
        ("127.0.0.1:5000/envkit", None),
        ("localhost:5000/a/b/c", None),
        ("team/envkit", None),  # Docker Hub
        ("", "is empty"),
        ("ghcr.io/team/envkit:latest", "names a tag or digest"),
        ("ghcr.io/team/envkit@sha256:" + "0" * 64, "names a tag or digest"),
        ("ghcr.io/Team/envkit", "is not a registry path"),
        ("ghcr.io/team//envkit", "is not a registry path"),
        ("ghcr.io/team/envkit/", "is not a registry path"),
        ("https://ghcr.io/team", "is not a registry path"),
    ],
)
def test_what_a_cache_may_be(value: str, problem: str | None) -> None:
    found = repository_problem(value)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_the_environment_wins_and_set_empty_turns_the_cache_off(tmp_path: Path) -> None:
    config = stack(tmp_path, 'cache = "registry.example/team/envkit"', app="FROM scratch\n")
    assert config.cache == "registry.example/team/envkit"
    from_file = cache.resolve(config, Settings.from_env({}))
    assert from_file == cache.Remote("registry.example/team/envkit", f"[stack] cache in {config.file}")
    from_env = cache.resolve(config, Settings.from_env({"ENVKIT_CACHE": " 127.0.0.1:5000/ci "}))
    assert from_env == cache.Remote("127.0.0.1:5000/ci", "ENVKIT_CACHE")
    assert cache.resolve(config, Settings.from_env({"ENVKIT_CACHE": ""})) is None
    none = stack(tmp_path, "", app="FROM scratch\n")
    assert none.cache is None and cache.resolve(none, Settings.from_env({})) is None


def test_a_bad_cache_is_a_config_error_naming_where_it_was_set(tmp_path: Path) -> None:
    config = stack(tmp_path, "", app="FROM scratch\n")
    with pytest.raises(ConfigError) as caught:
        cache.resolve(config, Settings.from_env({"ENVKIT_CACHE": "Registry/X:tag"}))
    assert caught.value.key == "ENVKIT_CACHE" and "fix: set ENVKIT_CACHE=" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        stack(tmp_path, "cache = 42", app="FROM scratch\n")
    assert caught.value.key == "stack.cache" and "not a string" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        stack(tmp_path, 'cache = "ghcr.io/team/envkit:v1"', app="FROM scratch\n")
    assert caught.value.key == "stack.cache" and 'cache = "REGISTRY/PATH"' in str(caught.value)


def test_push_setting_from_the_environment() -> None:
    assert Settings.from_env({}).cache_push is False
    assert Settings.from_env({"ENVKIT_CACHE_PUSH": "1"}).cache_push is True
    assert Settings.from_env({}).cache is None
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"ENVKIT_CACHE_PUSH": "maybe"})
    assert caught.value.key == "ENVKIT_CACHE_PUSH"


def test_an_entry_is_the_image_name_and_the_full_key() -> None:
    remote = cache.Remote("127.0.0.1:5000/team", "ENVKIT_CACHE")
    assert remote.ref("api", KEY) == f"127.0.0.1:5000/team/api:{KEY}"


def test_the_summary_counts_pulled_images_only_when_there_are_some() -> None:
    def results(*statuses: str) -> list[build.ImageResult]:
        return [build.ImageResult(f"i{n}", KEY, "t", s) for n, s in enumerate(statuses)]

    assert build.tally(results("built", "cached", "cached")) == "1 built, 2 cached"
    assert build.tally(results("pulled", "built", "pulled", "cached")) == "1 built, 2 pulled, 1 cached"


def test_push_error_says_what_was_not_pushed_and_survives_pickling() -> None:
    error = PushError("ghcr.io/t/c", [("ghcr.io/t/c/api:k", "denied")], "docker login ghcr.io")
    text = str(error)
    assert "1 image not pushed to the cache ghcr.io/t/c" in text
    assert "- ghcr.io/t/c/api:k: denied" in text and "fix: docker login ghcr.io" in text
    assert isinstance(error, RuntimeError)
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == text and copy.__dict__ == error.__dict__


# -- lookups, pulls and secrets with a fake engine -----------------------------------------------


class FakeDaemon:
    """What the cache module asks of the engine, as plain data."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, str]] = {}  # ref -> labels of the image there
        self.local: dict[str, dict[str, str]] = {}  # ref -> labels, here
        self.down = False
        self.calls: list[tuple[str, str]] = []
        self.barrier: threading.Barrier | None = None
        self.history_lines: list[str] = []
        self.env: list[str] = []

    def distribution(self, ref: str, *, timeout: float) -> dict[str, Any] | None:
        self.calls.append(("distribution", ref))
        if self.barrier is not None:
            self.barrier.wait(timeout=5)  # every lookup is under way at once, or this breaks
        if self.down:
            raise DaemonError(f"GET /distribution/{ref}/json answered 500: dial tcp: connection refused", 500)
        return {"Descriptor": {}} if ref in self.entries else None

    def pull(
        self, ref: str, *, stall: float | None, on_progress: Callable[[str], None] | None = None
    ) -> None:
        self.calls.append(("pull", ref))
        if ref not in self.entries:
            raise EngineStreamError(f"pulling {ref} failed: manifest unknown", reason="manifest unknown")
        if on_progress is not None:
            on_progress("abc: Pull complete")
        self.local[ref] = self.entries[ref]

    def image_labels(self, ref: str) -> dict[str, str] | None:
        return self.local.get(ref)

    def tag(self, image: str, reference: str) -> None:
        self.calls.append(("tag", f"{image} {reference}"))
        self.local[reference] = self.local[image]

    def remove_image(self, ref: str) -> None:
        self.calls.append(("remove", ref))
        self.local.pop(ref, None)

    def inspect_image(self, ref: str) -> dict[str, Any] | None:
        return {"Config": {"Env": self.env, "Labels": self.local.get(ref, {})}}

    def history(self, ref: str) -> list[str]:
        return self.history_lines


REMOTE = cache.Remote("127.0.0.1:5000/c", "ENVKIT_CACHE")


def test_lookups_run_all_at_once_one_request_each(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeDaemon()
    fake.entries[REMOTE.ref("a", KEY)] = {}
    fake.barrier = threading.Barrier(3)
    found = cache.lookup(fake, REMOTE, {"a": KEY, "b": KEY, "c": KEY})  # type: ignore[arg-type]
    assert {n: f.state for n, f in found.items()} == {"a": "present", "b": "absent", "c": "absent"}
    assert len(fake.calls) == 3
    assert found["b"].why_not(REMOTE) == f"{REMOTE.ref('b', KEY)} is not in the cache"
    assert not caplog.records


def test_a_cache_that_does_not_answer_is_one_warning_naming_it(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeDaemon()
    fake.down = True
    with caplog.at_level(logging.WARNING, logger="envkit"):
        found = cache.lookup(fake, REMOTE, {"a": KEY, "b": KEY})  # type: ignore[arg-type]
    assert {f.state for f in found.values()} == {"unreachable"}
    assert found["a"].detail == "dial tcp: connection refused"
    [record] = caplog.records
    assert record.getMessage().startswith(
        "envkit: the cache 127.0.0.1:5000/c (from ENVKIT_CACHE) did not answer"
    )
    assert (
        found["a"].why_not(REMOTE)
        == "the cache 127.0.0.1:5000/c did not answer (dial tcp: connection refused)"
    )


@pytest.mark.parametrize(
    ("entry_labels", "why"),
    [
        ({labels.KEY: "cd" * 32}, f"its {labels.KEY} label is '{'cd' * 32}'"),
        ({labels.PROJECT: "demo"}, f"it has no {labels.KEY} label"),
    ],
)
def test_an_entry_whose_label_is_not_its_key_is_refused_and_removed(
    entry_labels: dict[str, str], why: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeDaemon()
    ref = REMOTE.ref("api", KEY)
    fake.entries[ref] = entry_labels
    with caplog.at_level(logging.WARNING, logger="envkit"), pytest.raises(cache.Unusable) as caught:
        cache.pull(fake, REMOTE, "api", KEY, "demo/api:abab", progress=Silent(), stall=None)  # type: ignore[arg-type]
    assert str(caught.value) == f"refused {ref}: {why}, not the image's key"
    assert ("remove", ref) in fake.calls and not any(c[0] == "tag" for c in fake.calls)
    assert fake.local == {}
    [record] = caplog.records
    assert record.getMessage() == f"envkit: api: refused {ref}: {why}, not the image's key; building it here"


def test_a_good_entry_is_tagged_as_a_build_would_and_its_cache_name_goes() -> None:
    fake = FakeDaemon()
    ref = REMOTE.ref("api", KEY)
    fake.entries[ref] = {labels.KEY: KEY, labels.BUILDER: "assembler"}
    found = cache.pull(fake, REMOTE, "api", KEY, "demo/api:abab", progress=Silent(), stall=None)  # type: ignore[arg-type]
    assert found[labels.BUILDER] == "assembler"
    assert fake.calls[-2:] == [("tag", f"{ref} demo/api:abab"), ("remove", ref)]
    assert set(fake.local) == {"demo/api:abab"}


def test_a_failed_pull_is_unusable_not_an_error() -> None:
    fake = FakeDaemon()
    with pytest.raises(cache.Unusable, match=r"pulling .* failed \(manifest unknown\)"):
        cache.pull(fake, REMOTE, "api", KEY, "demo/api:abab", progress=Silent(), stall=None)  # type: ignore[arg-type]


def test_secret_looking_build_args_of_an_image_and_its_parents(tmp_path: Path) -> None:
    (tmp_path / "envkit.toml").write_text(
        '[stack]\nname = "demo"\n[images.base]\nargs = { NPM_TOKEN = "t0ps3cr3t", MODE = "x" }\n'
        '[images.app]\nargs = { SIGNING_KEY = "k", DB_PASSWORD = "p", KEYBOARD = "no" }\n'
    )
    for name, text in (("base", "FROM scratch\n"), ("app", "FROM base\n")):
        (tmp_path / "images" / name).mkdir(parents=True)
        (tmp_path / "images" / name / "Dockerfile").write_text(text)
    config = load(tmp_path, environ={})
    assert cache.secrets(config, "app") == {
        "NPM_TOKEN": ("base", "t0ps3cr3t"),
        "SIGNING_KEY": ("app", "k"),
        "DB_PASSWORD": ("app", "p"),
    }
    assert cache.secrets(config, "base") == {"NPM_TOKEN": ("base", "t0ps3cr3t")}


def test_a_secret_value_found_in_the_history_or_config_is_a_leak() -> None:
    fake = FakeDaemon()
    fake.local["demo/app:1"] = {"org.example": "plain"}
    fake.history_lines = ['|2 NPM_TOKEN=t0ps3cr3t-long MODE=x /bin/sh -c "npm ci"', "COPY . /app"]
    fake.env = ["PATH=/bin", "DB=p4ss"]
    args = {"NPM_TOKEN": "t0ps3cr3t-long", "DB_PASSWORD": "p4ss", "API_KEY": "x", "OTHER_KEY": ""}
    assert cache.leaked(fake, "demo/app:1", args) == ["NPM_TOKEN", "DB_PASSWORD"]  # type: ignore[arg-type]
    fake.history_lines, fake.env = ["RUN make"], []
    assert cache.leaked(fake, "demo/app:1", args) == []  # type: ignore[arg-type]


# -- which misses an ensure makes --------------------------------------------------------------------


def scheduler(tmp_path: Path, present: set[str]) -> build._Scheduler:
    """a <- b <- c, every one a miss; ``present``: the ones the cache holds."""
    config = stack(tmp_path, "", a="FROM scratch\n", b="FROM a\n", c="FROM b\n")
    assert isinstance(config.images["c"], ImageSpec)
    inputs = {
        n: Inputs(dockerfile=n, args={}, target=None, platform="linux/amd64", bases={}, parents={}, files={})
        for n in "abc"
    }
    the_plan = build.Plan(config, ["a", "b", "c"], inputs, 0)
    results = {n: build.ImageResult(n, inputs[n].key, the_plan.tag(n), "built") for n in "abc"}
    sched = build._Scheduler(
        the_plan,
        FakeDaemon(),  # type: ignore[arg-type]
        results,
        manifests=None,  # type: ignore[arg-type]
        progress=Silent(),
        settings=Settings(),
        remote=REMOTE,
        build=True,
    )
    sched.lookups = {
        n: cache.Lookup(REMOTE.ref(n, inputs[n].key), "present" if n in present else "absent") for n in "abc"
    }
    return sched


@pytest.mark.parametrize(
    ("names", "present", "needed"),
    [
        (None, {"c"}, ["a", "b", "c"]),  # every image asked for: every one made (pulled or built)
        (["c"], set(), ["a", "b", "c"]),  # c is built: its parents first
        (["c"], {"c"}, ["c"]),  # c is pulled: nothing is built on a or b
        (["c"], {"b", "c"}, ["c"]),
        (["c"], {"b"}, ["b", "c"]),  # c is built on b, which is pulled: a is not needed
        (["b", "c"], {"c"}, ["a", "b", "c"]),  # b is asked for and built: a with it
    ],
)
def test_an_image_selected_only_as_a_parent_is_made_only_to_build_on(
    tmp_path: Path, names: list[str] | None, present: set[str], needed: list[str]
) -> None:
    assert scheduler(tmp_path, present)._needed(["a", "b", "c"], names) == needed


# -- the engine's registry calls --------------------------------------------------------------------


@pytest.fixture
def no_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))


def test_distribution_is_the_descriptor_or_none_when_absent(engine: Engine, no_docker_config: None) -> None:  # noqa: F811
    answers = {
        "/distribution/r.example/c/a:1/json": (
            200,
            json.dumps({"Descriptor": {"digest": "sha256:x"}}).encode(),
        ),
        "/distribution/r.example/c/b:1/json": (404, b'{"message": "manifest unknown: manifest unknown"}'),
        "/distribution/r.example/c/c:1/json": (500, b'{"message": "manifest unknown: manifest unknown"}'),
        "/distribution/r.example/c/d:1/json": (500, b'{"message": "dial tcp: connection refused"}'),
    }
    engine.script = lambda method, path: answers[path]
    daemon = daemon_for(engine)
    assert daemon.distribution("r.example/c/a:1", timeout=1) == {"Descriptor": {"digest": "sha256:x"}}
    assert daemon.distribution("r.example/c/b:1", timeout=1) is None
    assert daemon.distribution("r.example/c/c:1", timeout=1) is None
    with pytest.raises(DaemonError) as caught:
        daemon.distribution("r.example/c/d:1", timeout=1)
    assert caught.value.status == 500 and "connection refused" in str(caught.value)


def test_a_lookup_of_a_registry_that_hangs_ends_at_its_bound(engine: Engine, no_docker_config: None) -> None:  # noqa: F811
    engine.script = lambda method, path: None  # never answers
    daemon = daemon_for(engine)
    with pytest.raises(DaemonError) as caught:
        daemon.distribution("r.example/c/a:1", timeout=0.3)
    assert caught.value.timed_out


def test_a_push_that_fails_in_its_stream_is_an_error(engine: Engine, no_docker_config: None) -> None:  # noqa: F811
    ok = b'{"status":"The push refers to repository [r.example/c/a]"}\n{"status":"Pushed","id":"ab"}\n'
    failed = ok + b'{"errorDetail":{"message":"denied: requested access is denied"},"error":"denied"}\n'
    engine.script = lambda method, path: (200, failed if "/c/b/" in path else ok)
    daemon = daemon_for(engine)
    lines: list[str] = []
    daemon.push("r.example/c/a:1", stall=5, on_progress=lines.append)
    assert lines == ["The push refers to repository [r.example/c/a]", "ab: Pushed"]
    assert ("POST", "/images/r.example/c/a/push") in engine.requests
    with pytest.raises(
        EngineStreamError,
        match=re.escape("pushing r.example/c/b:1 failed: denied: requested access is denied"),
    ) as caught:
        daemon.push("r.example/c/b:1", stall=5)
    assert caught.value.reason == "denied: requested access is denied"
