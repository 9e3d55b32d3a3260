"""Content keys: what changes them, what must not, and the stat cache's racy rule."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from envkit.config.find import load
from envkit.config.model import ImageSpec
from envkit.images.digest import Hasher, Inputs, image_inputs
from envkit.images.manifests import explain
from envkit.images.statcache import StatCache


def spec_for(root: Path, name: str = "app") -> ImageSpec:
    return load(root, environ={}).images[name]


def key_of(root: Path, cache: StatCache | None = None, name: str = "app") -> Inputs:
    spec = spec_for(root, name)
    hasher = Hasher(cache or StatCache(root / ".envkit" / "stat-cache.json"))
    files = hasher.context_files(spec, skip=[root / ".envkit"])
    return image_inputs(spec, files, platform="linux/amd64", bases={"x": "sha256:1"}, parents={})


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "p"
    (root / "images/app/sub").mkdir(parents=True)
    (root / "envkit.toml").write_text('[stack]\nname = "d"\n[images.app]\n')
    (root / "images/app/Dockerfile").write_text("FROM x\nCOPY . /app\n")
    (root / "images/app/a.txt").write_text("alpha\n")
    (root / "images/app/sub/b.txt").write_text("beta\n")
    return root


def test_key_ignores_location_mtime_and_group_bits(root: Path, tmp_path: Path) -> None:
    before = key_of(root)
    copy = tmp_path / "elsewhere" / "p"
    shutil.copytree(root, copy)
    os.utime(copy / "images/app/a.txt", (1, 1))
    (copy / "images/app/a.txt").chmod(0o664)
    assert key_of(copy).key == before.key


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: (d / "a.txt").write_text("alphA\n"), "file changed: a.txt (content)"),
        (lambda d: (d / "a.txt").chmod(0o755), "file changed: a.txt (mode 644 -> 755)"),
        (lambda d: (d / "a.txt").rename(d / "c.txt"), "file added: c.txt"),
        (lambda d: (d / "new.txt").write_text(""), "file added: new.txt"),
        (lambda d: (d / "sub/b.txt").unlink(), "file removed: sub/b.txt"),
        (lambda d: (d / "Dockerfile").write_text("FROM x\nCOPY . /srv\n"), "the Dockerfile changed"),
    ],
)
def test_changes_change_the_key_and_are_explained(root: Path, change: object, reason: str) -> None:
    before = key_of(root)
    change(root / "images/app")  # type: ignore[operator]
    after = key_of(root)
    assert after.key != before.key
    assert reason in explain(before, after)


def test_symlink_target_is_part_of_the_key(root: Path) -> None:
    link = root / "images/app/link"
    link.symlink_to("a.txt")
    before = key_of(root)
    link.unlink()
    link.symlink_to("sub/b.txt")
    after = key_of(root)
    assert after.key != before.key
    assert "file changed: link (link target a.txt -> sub/b.txt)" in explain(before, after)


def test_dockerignore_with_negation_and_dockerfile_specific_ignore(root: Path) -> None:
    app = root / "images/app"
    (app / "debug.log").write_text("noise")
    (app / ".dockerignore").write_text("# logs\n*.log\n")
    before = key_of(root)
    assert "debug.log" not in before.files and ".dockerignore" not in before.files
    (app / "other.log").write_text("ignored too")
    assert key_of(root).key == before.key
    (app / ".dockerignore").write_text("*.log\n!debug.log\n")
    assert "debug.log" in key_of(root).files
    # <Dockerfile>.dockerignore wins over the context's .dockerignore
    (app / "Dockerfile.dockerignore").write_text("sub\n")
    files = key_of(root).files
    assert "debug.log" in files and "sub/b.txt" not in files and "Dockerfile.dockerignore" in files


def test_state_dir_inside_the_context_is_never_part_of_it(tmp_path: Path) -> None:
    (tmp_path / "envkit.toml").write_text('[stack]\nname = "d"\n[images.app]\ncontext = "."\n')
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    first = key_of(tmp_path)
    (tmp_path / ".envkit").mkdir(exist_ok=True)
    (tmp_path / ".envkit" / "junk").write_text("x")
    assert key_of(tmp_path).key == first.key
    assert not any(p.startswith(".envkit") for p in first.files)


def test_other_inputs_change_the_key() -> None:
    base = dict(dockerfile="d", args={}, target=None, platform="linux/amd64", bases={}, parents={}, files={})
    key = Inputs(**base).key  # type: ignore[arg-type]
    for field, value in [
        ("args", {"A": "1"}),
        ("target", "t"),
        ("platform", "linux/arm64"),
        ("bases", {"alpine": "sha256:2"}),
        ("parents", {"base": "k"}),
        ("schema", 99),
        ("builder", "buildkit"),
    ]:
        assert Inputs(**{**base, field: value}).key != key, field  # type: ignore[arg-type]


def test_stat_cache_skips_unchanged_files_and_rehashes_racy_ones(root: Path) -> None:
    cache_path = root / ".envkit" / "stat-cache.json"
    past = time.time() - 100
    for path in (root / "images/app").rglob("*"):
        os.utime(path, (past, past))
    spec = spec_for(root)
    cold = Hasher(StatCache(cache_path))
    old_digest = cold.context_files(spec)["a.txt"]
    cold.cache.save(cold.started_ns, prune=True)
    assert cold.hashed_files == 3

    warm = Hasher(StatCache(cache_path))
    warm.context_files(spec)
    assert warm.hashed_files == 0

    # Same size, old mtime restored (touch -r): ctime still moves, so it is hashed again.
    a = root / "images/app/a.txt"
    st = a.stat()
    a.write_text("ALPHA\n")
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    edited = Hasher(StatCache(cache_path))
    files = edited.context_files(spec)
    assert edited.hashed_files == 1
    assert files["a.txt"] != old_digest

    # A file whose mtime is not older than the cache's write time is always hashed again.
    edited.cache.save(edited.started_ns, prune=True)
    future = time.time() + 3600
    os.utime(a, (future, future))
    racy = Hasher(StatCache(cache_path))
    racy.context_files(spec)
    racy.cache.save(racy.started_ns, prune=True)
    again = Hasher(StatCache(cache_path))
    again.context_files(spec)
    assert again.hashed_files == 1


def test_corrupt_stat_cache_is_ignored(root: Path) -> None:
    cache_path = root / ".envkit" / "stat-cache.json"
    cache_path.parent.mkdir()
    cache_path.write_text("{not json")
    hasher = Hasher(StatCache(cache_path))
    hasher.context_files(spec_for(root))
    assert hasher.hashed_files == 3


def test_explain_first_build_and_removed_image() -> None:
    inputs = Inputs(dockerfile="d", args={}, target=None, platform="p", bases={}, parents={}, files={})
    assert "no earlier build" in explain(None, inputs)[0]
    assert "removed locally" in explain(inputs, inputs)[0]


@pytest.mark.parametrize(
    "patterns",
    [
        [],
        ["*.log"],
        ["*.log", "!keep.log"],
        ["build", "!build/keep/**"],
        ["**/*.pyc", "docs/", "!docs/README.md", "/top.txt"],
        ["*", "!src"],
        ["src/*/deep", ".git"],
    ],
)
def test_walk_matches_docker_py_exclude_paths(tmp_path: Path, patterns: list[str]) -> None:
    from docker.utils.build import exclude_paths

    from envkit.images.context import context_entries

    root = tmp_path / "p"
    ctx = root / "images/app"
    for relative in [
        "Dockerfile", "a.log", "keep.log", "top.txt", "x/top.txt", "build/out.o", "build/keep/k.txt",
        "docs/README.md", "docs/api.md", "src/m/deep/f.py", "src/m/g.pyc", "src/n.py", ".git/HEAD",
    ]:  # fmt: skip
        (ctx / relative).parent.mkdir(parents=True, exist_ok=True)
        (ctx / relative).write_text(relative)
    (ctx / "Dockerfile").write_text("FROM x\n")
    (ctx / "src/link").symlink_to("m")
    (ctx / "emptydir").mkdir()
    (ctx / ".dockerignore").write_text("\n".join(patterns) + "\n")
    (root / "envkit.toml").write_text('[stack]\nname = "d"\n[images.app]\n')
    ours = [path for path, _ in context_entries(spec_for(root))]
    theirs = sorted(exclude_paths(str(ctx), list(patterns), dockerfile="") - {".dockerignore"})
    assert ours == theirs


class TestListingCache:
    """An unchanged context is not walked nor matched again; any change to its tree is seen."""

    @pytest.fixture
    def walks(self, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        import envkit.images.context

        calls: list[str] = []
        real = envkit.images.context._walk

        def counting(context: str, *args: object) -> object:
            calls.append(context)
            return real(context, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(envkit.images.context, "_walk", counting)
        return calls

    @staticmethod
    def run(root: Path) -> tuple[dict[str, str], Hasher]:
        hasher = Hasher(StatCache(root / ".envkit" / "stat-cache.json"))
        files = hasher.context_files(spec_for(root), skip=[root / ".envkit"])
        hasher.cache.save(hasher.started_ns, prune=True)
        return files, hasher

    def test_unchanged_tree_reuses_the_listing(self, root: Path, walks: list[str]) -> None:
        (root / "images/app/.dockerignore").write_text("*.log\n")
        (root / "images/app/x.log").write_text("ignored")
        first, _ = self.run(root)
        second, hasher = self.run(root)
        assert walks == [str(root / "images/app")]  # the second run did not walk
        assert second == first and "x.log" not in second
        assert hasher.hashed_files == 0

    @pytest.mark.parametrize(
        "change",
        [
            lambda d: (d / "sub/new.txt").write_text("new"),
            lambda d: (d / "sub/b.txt").unlink(),
            lambda d: (d / "a.txt").rename(d / "sub/a.txt"),
            lambda d: (d / ".dockerignore").write_text("sub\n"),
            lambda d: (d / "sub").chmod(0o700),
        ],
        ids=["add", "delete", "move", "ignore-rules", "dir-chmod"],
    )
    def test_any_change_to_the_tree_walks_again(self, root: Path, walks: list[str], change: object) -> None:
        app = root / "images/app"
        self.run(root)
        st = (app / "sub").stat()
        change(app)  # type: ignore[operator]
        os.utime(app / "sub", ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the old mtime put back
        files, _ = self.run(root)
        assert len(walks) == 2
        from envkit.images.context import _walk

        expected, _ = _walk(str(app), [], set())
        if (app / ".dockerignore").exists():
            expected = [e for e in expected if not e[0].startswith("sub")]
        assert list(files) == [path for path, _ in expected if path != ".dockerignore"]

    def test_a_directory_changed_since_the_cache_was_written_is_not_trusted(
        self, root: Path, walks: list[str]
    ) -> None:
        self.run(root)
        future = time.time() + 3600
        os.utime(root / "images/app/sub", (future, future))
        cache = StatCache(root / ".envkit" / "stat-cache.json")
        Hasher(cache).context_files(spec_for(root), skip=[root / ".envkit"])
        assert len(walks) == 2


def test_an_ignore_file_that_is_not_utf8_is_a_config_error(root: Path) -> None:
    from envkit.errors import ConfigError

    (root / "images/app/.dockerignore").write_bytes(b"\xff\xfe*.log\n")
    with pytest.raises(ConfigError, match="not UTF-8") as caught:
        key_of(root)
    assert caught.value.file == root / "images/app/.dockerignore"


def test_the_builder_is_part_of_the_key(root: Path) -> None:
    """The assembler and the classic builder make different images of one Dockerfile: their keys
    differ, and so do the tags."""
    from envkit.images.digest import ASSEMBLER, BUILDER, KEY_SCHEMA

    spec = spec_for(root)
    files = Hasher(StatCache(root / ".envkit" / "stat-cache.json")).context_files(spec)
    by_classic = image_inputs(spec, files, platform="linux/amd64", bases={}, parents={}, builder=BUILDER)
    by_envkit = image_inputs(spec, files, platform="linux/amd64", bases={}, parents={}, builder=ASSEMBLER)
    assert by_classic.key != by_envkit.key
    assert by_envkit.head()["builder"] == ASSEMBLER and by_envkit.head()["schema"] == KEY_SCHEMA == 3


@pytest.mark.parametrize(
    "damage",
    [
        {"args": 5},
        {"files": ["a"]},
        {"bases": {"x": 1}},
        {"dockerfile": None},
        {"target": 3},
        {"parents": "p"},
    ],
)
def test_a_manifest_of_the_wrong_shape_explains_nothing_instead_of_failing(
    root: Path, damage: dict[str, object]
) -> None:
    import json

    from envkit.images.manifests import Manifests

    inputs = key_of(root)
    manifests = Manifests(root / ".envkit" / "manifests")
    manifests.record("app", inputs)
    path = root / ".envkit" / "manifests" / "app" / f"{inputs.key}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **damage}))
    assert manifests.latest("app") is None
    assert explain(manifests.latest("app"), inputs) == ["no earlier build of this image is recorded here"]


@pytest.mark.parametrize("entry", [5, "x", [], [1, 2, 3], None, {"a": 1}])
def test_a_stat_cache_entry_of_the_wrong_shape_means_hash_the_file(root: Path, entry: object) -> None:
    cache = StatCache(root / ".envkit" / "stat-cache.json")
    path = str(root / "images/app/a.txt")
    cache.entries[path] = entry  # type: ignore[assignment]
    assert cache.lookup(path, os.stat(path)) is None


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("NPM_TOKEN", True), ("DB_PASS", True), ("DB_PASSWORD", True), ("APIKEY", True), ("API_KEY", True),
        ("AUTH", True), ("GITHUB_PAT", True), ("TLS_CERT", True), ("PRIVATE_KEY", True), ("SSH_KEY", True),
        ("PASSENGER", False), ("VERSION", False), ("PYTHON_VERSION", False), ("KEYBOARD", False),
    ],
)  # fmt: skip
def test_build_args_that_look_like_secrets_are_recorded_only_as_digests(name: str, secret: bool) -> None:
    from envkit.images.manifests import redacted

    recorded = redacted({name: "hunter2"})[name]
    assert (recorded != "hunter2") is secret
    if secret:
        assert recorded.startswith("sha256:")


def _inspected(**changes: Any) -> dict[str, Any]:
    """An image inspect answer as Docker's classic store gives it."""
    found: dict[str, Any] = {
        "Id": "sha256:" + "1" * 64,
        "Created": "2026-12-07T17:36:36.113774881Z",
        "Os": "linux",
        "Architecture": "amd64",
        "RootFS": {"Type": "layers", "Layers": ["sha256:" + "a" * 64]},
        "Config": {
            "Env": ["PATH=/bin", "A=1"],
            "Cmd": ["sh"],
            "Labels": {"team": "core"},
            "ExposedPorts": {"80/tcp": {}},
            "Image": "sha256:" + "2" * 64,
            "Hostname": "",
            "User": "",
            "Entrypoint": None,
        },
    }
    for key, value in changes.items():
        if key == "Config":
            found["Config"] = {**found["Config"], **value}
        else:
            found[key] = value
    return found


def test_a_base_is_known_by_its_content_on_every_store() -> None:
    """The same image on Docker's classic store, its containerd store (ID: the manifest's digest;
    Config.Image empty on Docker 28; empty fields as null) and in another engine's answer has one
    identity; a change of layers, config or platform is another."""
    from envkit.images.build import content_identity

    classic = content_identity(_inspected())
    containerd = content_identity(
        _inspected(
            Id="sha256:" + "9" * 64,
            Created="2026-12-07T17:40:00Z",
            Config={
                "Image": "",
                "User": None,
                "Volumes": None,
                "OnBuild": None,
                "ExposedPorts": {"80/tcp": {}},
            },
        )
    )
    assert classic == containerd
    assert classic.startswith("content:sha256:")
    for other in (
        _inspected(RootFS={"Type": "layers", "Layers": ["sha256:" + "b" * 64]}),
        _inspected(Config={"Env": ["PATH=/bin", "A=2"]}),
        _inspected(Config={"Cmd": ["sh", "-c", "true"]}),
        _inspected(Config={"ExposedPorts": {"81/tcp": {}}}),
        _inspected(Config={"Labels": {"team": "other"}}),
        _inspected(Architecture="arm64"),
    ):
        assert content_identity(other) != classic
