"""Debian recipes: validation, the mmdebstrap command line, import changes, and build failures.

The build failures run a fake ``mmdebstrap`` (a shell script put first on PATH);
none of them gets as far as the Docker daemon, so no daemon is passed.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from envkit.config import recipe as recipe_model
from envkit.errors import BuildError, ConfigError
from envkit.images import recipe

GOOD = """\
[debian]
suite = "bookworm"
variant = "apt"
snapshot = "20240101T000000Z"
sources = [
    "deb http://snapshot.debian.org/archive/debian/{snapshot} bookworm main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
]
exclude_paths = ["/usr/share/doc/*", "/usr/share/man/*"]

[packages]
redis-server = "5:7.0.15-1~deb12u1"
libc6 = "2.36-9+deb12u4"
ca-certificates = "*"

[image]
env = { LANG = "C.UTF-8", GREETING = "hello world" }
cmd = ["/bin/sh", "-c", "echo hi"]
workdir = "/srv/app"
"""

MINIMAL = '[debian]\nsuite = "trixie"\nsources = ["deb http://deb.debian.org/debian trixie main"]\n'


def parse(text: str, file: Path = Path("/p/images/base/recipe.toml")) -> recipe_model.Recipe:
    return recipe_model.parse(file, text, "images.base")


class Notes:
    """A Progress that remembers what it was told."""

    def __init__(self) -> None:
        self.logs: list[str] = []
        self.notes: list[str] = []

    def log(self, image: str, line: str) -> None:
        self.logs.append(line)

    def note(self, image: str, message: str, state: object = None) -> None:
        self.notes.append(message)


# --- parsing -------------------------------------------------------------------------------------


def test_good_recipe_is_read_into_its_fields() -> None:
    r = parse(GOOD)
    assert r.file == Path("/p/images/base/recipe.toml")
    assert r.suite == "bookworm"
    assert r.variant == "apt"
    assert r.snapshot == "20240101T000000Z"
    assert r.sources[0].endswith("/{snapshot} bookworm main")  # substituted only in the command
    assert r.exclude_paths == ("/usr/share/doc/*", "/usr/share/man/*")
    assert dict(r.packages) == {
        "redis-server": "5:7.0.15-1~deb12u1",
        "libc6": "2.36-9+deb12u4",
        "ca-certificates": "*",
    }
    assert dict(r.env) == {"LANG": "C.UTF-8", "GREETING": "hello world"}
    assert r.cmd == ("/bin/sh", "-c", "echo hi")
    assert r.workdir == "/srv/app"


def test_minimal_recipe_gets_defaults() -> None:
    r = parse(MINIMAL)
    assert r.variant == "minbase"
    assert r.snapshot is None and r.source_date_epoch() is None
    assert r.exclude_paths == () and dict(r.packages) == {}
    assert dict(r.env) == {} and r.cmd == () and r.workdir is None


R = "/p/images/base/recipe.toml"
# (recipe text, the key the error must name, words its message must contain)
BAD = [
    ("[debian\nsuite = 1", "", "not valid TOML"),
    ('[debain]\nsuite = "x"\n', "debain", "unknown table"),
    ('[packages]\nfoo = "1"\n', "debian", "missing or not a table"),
    ('debian = "bookworm"\n', "debian", "missing or not a table"),
    ('[debian]\nsources = ["deb x"]\n', "debian.suite", "missing or not a string"),
    ('[debian]\nsuite = 12\nsources = ["deb x"]\n', "debian.suite", "missing or not a string"),
    ('[debian]\nsuite = "bookworm"\nmirror = "x"\nsources = ["deb x"]\n', "debian.mirror", "unknown key"),
    (
        '[debian]\nsuite = "bookworm"\nvariant = "tiny"\nsources = ["deb x"]\n',
        "debian.variant",
        "'tiny' is not an mmdebstrap variant",
    ),
    (
        '[debian]\nsuite = "bookworm"\nsnapshot = "2024-01-01"\nsources = ["deb x"]\n',
        "debian.snapshot",
        "'2024-01-01' is not a timestamp",
    ),
    (
        '[debian]\nsuite = "bookworm"\nsnapshot = 20240101\nsources = ["deb x"]\n',
        "debian.snapshot",
        "is not a timestamp",
    ),
    ('[debian]\nsuite = "bookworm"\nsources = []\n', "debian.sources", "no package source"),
    ('[debian]\nsuite = "bookworm"\n', "debian.sources", "no package source"),
    ('[debian]\nsuite = "bookworm"\nsources = "deb x"\n', "debian.sources", "list of strings"),
    (
        '[debian]\nsuite = "bookworm"\nsources = ["deb http://s/{snapshot} bookworm main"]\n',
        "debian.sources",
        "{snapshot} but no snapshot",
    ),
    (
        '[debian]\nsuite = "bookworm"\nsources = ["deb x"]\nexclude_paths = "/usr/share/doc"\n',
        "debian.exclude_paths",
        "list of strings",
    ),
    (MINIMAL + '[packages]\nRedis_Server = "1.0"\n', "packages.Redis_Server", "not a Debian package name"),
    (MINIMAL + '[packages]\nx = "1.0"\n', "packages.x", "not a Debian package name"),
    (MINIMAL + '[packages]\nredis = "7.0 beta"\n', "packages.redis", "'7.0 beta' is not a version"),
    (MINIMAL + "[packages]\nredis = 7\n", "packages.redis", "7 is not a version"),
    (MINIMAL + '[packages]\nredis = ""\n', "packages.redis", "is not a version"),
    (MINIMAL + '[image]\nentrypoint = ["sh"]\n', "image.entrypoint", "unknown key"),
    (MINIMAL + "[image]\nenv = { N = 1 }\n", "image.env", "table of one-line strings"),
    (MINIMAL + '[image]\nenv = ["A=1"]\n', "image.env", "table of one-line strings"),
    (MINIMAL + '[image]\ncmd = "sh"\n', "image.cmd", "list of strings"),
    (MINIMAL + '[image]\nworkdir = "app"\n', "image.workdir", "'app' is not an absolute path"),
]


@pytest.mark.parametrize(("text", "key", "words"), BAD, ids=[f"{b[1] or 'toml'}|{b[2]}" for b in BAD])
def test_bad_recipe_is_a_config_error_naming_the_file_and_key(text: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    err = caught.value
    assert err.file == Path(R)
    assert err.key == key
    message = str(err)
    assert words in message
    assert message.startswith(R)  # names the recipe file
    assert "fix: " in message


def test_syntax_error_fix_names_the_image_entry() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("[debian\n")
    assert "images.base.recipe" in caught.value.fix


def test_bad_version_fix_says_how_to_find_the_version() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(MINIMAL + '[packages]\nredis-server = "latest!"\n')
    assert "apt-cache policy redis-server" in caught.value.fix


@pytest.mark.parametrize("variant", ["extract", "essential", "minbase", "buildd", "important"])
def test_every_mmdebstrap_variant_is_accepted(variant: str) -> None:
    assert parse(MINIMAL + f'variant = "{variant}"\n').variant == variant


@pytest.mark.parametrize(
    ("table", "text"),
    [
        ("debian.snapshot", '[debian]\nsuite = "b"\nsnapshot = "20240101T000000Z\\n"\nsources = ["deb x"]\n'),
        ("debian.snapshot", '[debian]\nsuite = "b"\nsnapshot = "20241301T000000Z"\nsources = ["deb x"]\n'),
        ("packages.redis", MINIMAL + '[packages]\nredis = "7.0\\n"\n'),
        ("packages.redis\n", MINIMAL + '[packages]\n"redis\\n" = "7.0"\n'),
    ],
    ids=[
        "snapshot-trailing-newline",
        "snapshot-month-13",
        "version-trailing-newline",
        "name-trailing-newline",
    ],
)
def test_values_that_only_look_valid_are_rejected(table: str, text: str) -> None:
    """A value the validators let through must be usable: ``$`` also matches before a final newline,
    and a snapshot that is no real time makes ``source_date_epoch`` raise ValueError at build time."""
    with pytest.raises(ConfigError) as caught:
        parse(text).source_date_epoch()  # the build's first use of the snapshot
    assert caught.value.key == table


# --- what is derived from a recipe ------------------------------------------------------------------


def test_includes_pin_each_package_and_star_takes_the_current_one() -> None:
    assert parse(GOOD).includes() == [
        "redis-server=5:7.0.15-1~deb12u1",
        "libc6=2.36-9+deb12u4",
        "ca-certificates",
    ]
    assert parse(MINIMAL).includes() == []


def test_command_line_for_mmdebstrap() -> None:
    out = Path("/tmp/x/rootfs.tar")
    cmd = recipe.command(parse(GOOD), "/usr/bin/mmdebstrap", out)
    assert cmd[0] == "/usr/bin/mmdebstrap"
    # mmdebstrap's positional arguments: SUITE TARGET MIRROR..., the {snapshot} substituted
    assert cmd[-4:] == [
        "bookworm",
        str(out),
        "deb http://snapshot.debian.org/archive/debian/20240101T000000Z bookworm main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ]
    options = cmd[1:-4]
    assert all(o.startswith("--") for o in options)
    assert "--variant=apt" in options
    assert "--format=tar" in options
    assert "--include=redis-server=5:7.0.15-1~deb12u1,libc6=2.36-9+deb12u4,ca-certificates" in options
    excludes = [o for o in options if o.startswith("--dpkgopt=")]
    assert excludes == ["--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*"]


def test_command_line_without_packages_or_excludes() -> None:
    cmd = recipe.command(parse(MINIMAL), "mmdebstrap", Path("/o.tar"))
    assert not any(a.startswith(("--include", "--dpkgopt")) for a in cmd)
    assert "--variant=minbase" in cmd
    assert cmd[-3:] == ["trixie", "/o.tar", "deb http://deb.debian.org/debian trixie main"]


def test_image_config_carries_env_cmd_workdir_labels_and_the_snapshot_time() -> None:
    r = parse(GOOD)
    config = recipe.image_config(r, {"envkit.stack": "demo", "envkit.key": 'k"1'}, "linux/amd64", "sha256:ab")
    run = config["config"]
    assert run["Env"] == ["GREETING=hello world", "LANG=C.UTF-8"]
    assert run["Cmd"] == ["/bin/sh", "-c", "echo hi"]
    assert run["WorkingDir"] == "/srv/app"
    assert run["Labels"] == {"envkit.key": 'k"1', "envkit.stack": "demo"}
    assert config["rootfs"] == {"type": "layers", "diff_ids": ["sha256:ab"]}
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    epoch = r.source_date_epoch()
    expected = (
        "1970-01-01T00:00:00Z"
        if epoch is None
        else datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    assert config["created"] == expected


def test_image_config_of_a_minimal_recipe_has_only_labels() -> None:
    run = recipe.image_config(parse(MINIMAL), {"envkit.stack": "s"}, "linux/arm64", "sha256:ab")["config"]
    assert run == {"Env": None, "Cmd": None, "WorkingDir": "", "Labels": {"envkit.stack": "s"}}


@pytest.mark.parametrize(
    ("platform", "fields"),
    [
        ("linux/amd64", {"architecture": "amd64", "os": "linux"}),
        ("linux/arm64/v8", {"architecture": "arm64", "os": "linux", "variant": "v8"}),
        ("linux/arm/v7", {"architecture": "arm", "os": "linux", "variant": "v7"}),
    ],
)
def test_image_config_names_the_platforms_architecture_and_variant_apart(
    platform: str, fields: dict[str, str]
) -> None:
    config = recipe.image_config(parse(MINIMAL), {}, platform, "sha256:ab")
    assert {k: config[k] for k in ("architecture", "os", "variant") if k in config} == fields
    assert list(config)[:2] == ["architecture", "os"]  # the order (and so the ID) of a config without one


def test_image_config_is_created_at_the_snapshot_time() -> None:
    r = parse(MINIMAL + 'snapshot = "20240101T000000Z"\n')
    assert recipe.image_config(r, {}, "linux/amd64", "sha256:ab")["created"] == "2024-01-01T00:00:00Z"


@pytest.mark.parametrize("snapshot", ["20240101T000000Z", "20261125T123456Z", "19991231T235959Z"])
def test_source_date_epoch_is_the_snapshot_in_utc(snapshot: str) -> None:
    r = parse(MINIMAL + f'snapshot = "{snapshot}"\n')
    expected = datetime.strptime(snapshot, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp()
    assert r.source_date_epoch() == int(expected)


# --- build failures ----------------------------------------------------------------------------------


@pytest.fixture
def popens(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[subprocess.Popen[str]]]:
    """The processes ``recipe.build`` starts; their pipes are closed at the end of the test.

    (So that a pipe ``build`` leaves open fails only the test that checks for it, not
    whichever later test the garbage collector happens to run in.)
    """
    started: list[subprocess.Popen[str]] = []

    class Recording(subprocess.Popen):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(recipe.subprocess, "Popen", Recording)
    yield started
    for proc in started:
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, popens: list[subprocess.Popen[str]]) -> Path:
    """A directory that is first on PATH, for a fake mmdebstrap."""
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ.get('PATH', '')}")
    return directory


def fake_mmdebstrap(directory: Path, body: str) -> Path:
    script = directory / "mmdebstrap"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


RECIPE_FILE = Path("/p/images/base/recipe.toml")


def test_missing_mmdebstrap_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(BuildError) as caught:
        recipe.build(None, "base", parse(GOOD), {}, Notes(), facts=None)
    err = caught.value
    assert err.image == "base"
    assert "apt-get install mmdebstrap" in str(err)
    assert str(RECIPE_FILE) in str(err)


def test_a_pinned_version_gone_from_the_mirror_asks_for_a_relock(fake_bin: Path) -> None:
    fake_mmdebstrap(
        fake_bin,
        'echo "I: running apt-get update..."\n'
        "echo \"E: Version '1.0' for 'foo' was not found\"\n"
        "echo \"E: Version '2:3.4-5' for 'libbar1' was not found\"\n"
        "exit 1\n",
    )
    progress = Notes()
    r = parse(MINIMAL + '[packages]\nfoo = "1.0"\nlibbar1 = "2:3.4-5"\n')
    with pytest.raises(BuildError) as caught:
        recipe.build(None, "base", r, {}, progress, facts=None)
    err = caught.value
    message = str(err)
    assert "foo 1.0" in message and "libbar1 2:3.4-5" in message
    assert "re-locked" in message
    assert str(RECIPE_FILE) in message
    assert "envkit relock --image base" in message
    assert "E: Version '1.0' for 'foo' was not found" in err.build_log
    assert progress.logs[0] == "I: running apt-get update..."  # the output was streamed


def test_mmdebstrap_failure_reports_exit_code_and_output_tail(fake_bin: Path) -> None:
    fake_mmdebstrap(
        fake_bin,
        'i=1; while [ $i -le 40 ]; do echo "line $i"; echo; i=$((i+1)); done\n'
        'echo "epoch=$SOURCE_DATE_EPOCH"\n'
        'echo "args=$*"\n'
        "exit 2\n",
    )
    progress = Notes()
    with pytest.raises(BuildError) as caught:
        recipe.build(None, "base", parse(GOOD), {}, progress, facts=None)
    err = caught.value
    assert "exit code 2" in err.reason
    assert len(err.build_log) == recipe.LOG_TAIL  # the tail only; blank lines are dropped
    assert err.build_log[-3] == "line 40"
    assert "line 12" not in err.build_log
    assert err.build_log[-2] == "epoch=1704067200"  # SOURCE_DATE_EPOCH from the snapshot
    include = "--include=redis-server=5:7.0.15-1~deb12u1,libc6=2.36-9+deb12u4,ca-certificates"
    assert include in err.build_log[-1]  # the command line it was given
    assert "line 40" in str(err)
    assert len(progress.logs) == 42  # every non-blank line went to the progress


def test_no_snapshot_leaves_source_date_epoch_alone(fake_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    fake_mmdebstrap(fake_bin, 'echo "epoch=${SOURCE_DATE_EPOCH-unset}"\nexit 3\n')
    with pytest.raises(BuildError) as caught:
        recipe.build(None, "base", parse(MINIMAL), {}, Notes(), facts=None)
    assert caught.value.build_log == ["epoch=unset"]
    assert "exit code 3" in caught.value.reason


def test_build_closes_the_pipe_it_reads_mmdebstrap_from(
    fake_bin: Path, popens: list[subprocess.Popen[str]]
) -> None:
    fake_mmdebstrap(fake_bin, "echo working\nexit 2\n")
    with pytest.raises(BuildError):
        recipe.build(None, "base", parse(MINIMAL), {}, Notes(), facts=None)
    [proc] = popens
    assert proc.returncode == 2
    assert proc.stdout is not None
    assert proc.stdout.closed, "recipe.build leaves mmdebstrap's stdout pipe open (a ResourceWarning)"


def test_remove_paths_are_absolute_normalised_paths() -> None:
    r = parse(MINIMAL + 'remove_paths = ["/etc/ssl/private/k.key", "/var/lib/x"]\n')
    assert r.remove_paths == ("/etc/ssl/private/k.key", "/var/lib/x")
    for bad in ('"etc/x"', '"/etc/../x"', '"/"', '"/etc/x/"', "3"):
        with pytest.raises(ConfigError) as caught:
            parse(MINIMAL + f"remove_paths = [{bad}]\n")
        assert "debian.remove_paths" in str(caught.value)


def _rootfs(path: Path, entries: list[tuple[str, bytes, str, dict[str, str]]]) -> None:
    """A tar of (name, type, content or link target, pax headers) entries, mtime 2_000_000_000."""
    import io
    import tarfile

    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data, pax in entries:
            info = tarfile.TarInfo(name)
            info.type, info.mtime, info.pax_headers = kind, 2_000_000_000, pax
            info.uname = "someone"
            body = None
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = data
            elif kind == tarfile.REGTYPE:
                info.size = len(data)
                body = io.BytesIO(data.encode())
            tar.addfile(info, body)


def test_normalise_leaves_out_host_files_removed_paths_and_links_to_them(tmp_path: Path) -> None:
    import tarfile

    r = parse(MINIMAL + 'snapshot = "20240101T000000Z"\nremove_paths = ["/etc/ssl/private", "/srv/k"]\n')
    entries = [
        ("./etc", tarfile.DIRTYPE, "", {}),
        ("./etc/hostname", tarfile.REGTYPE, "buildhost\n", {}),
        ("./etc/resolv.conf", tarfile.REGTYPE, "nameserver 10.0.0.1\n", {}),
        ("./etc/ssl/private", tarfile.DIRTYPE, "", {}),
        ("./etc/ssl/private/snakeoil.key", tarfile.REGTYPE, "random", {}),
        ("./etc/ssl/certs/abcd1234.0", tarfile.SYMTYPE, "../private/snakeoil.key", {}),
        ("./srv/k", tarfile.REGTYPE, "random too", {}),
        ("./srv/k-hardlink", tarfile.LNKTYPE, "./srv/k", {}),
        ("./srv/kept", tarfile.REGTYPE, "kept", {"SCHILY.xattr.security.capability": "x", "comment": "no"}),
        ("./srv/kept-link", tarfile.SYMTYPE, "kept", {}),
    ]
    _rootfs(tmp_path / "a.tar", entries)
    diff_id, headers = recipe.normalise(tmp_path / "a.tar", tmp_path / "layer-a.tar", r)
    assert [h.name for h in headers] == ["./etc", "./srv/kept", "./srv/kept-link"]
    with tarfile.open(tmp_path / "layer-a.tar") as layer:
        members = layer.getmembers()
        assert all(m.mtime == r.source_date_epoch() for m in members)  # clamped to the snapshot
        assert all(m.uname == "" and m.gname == "" for m in members)
        kept = layer.getmember("./srv/kept")
        assert kept.pax_headers == {"SCHILY.xattr.security.capability": "x"}
    # the same rootfs written by another machine (its own hostname): the same layer
    other = [(n, k, "otherhost\n" if n.endswith("hostname") else d, p) for n, k, d, p in entries]
    _rootfs(tmp_path / "b.tar", other)
    assert recipe.normalise(tmp_path / "b.tar", tmp_path / "layer-b.tar", r)[0] == diff_id
