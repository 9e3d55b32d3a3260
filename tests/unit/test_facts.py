"""Reading an image's facts from ``docker save`` streams in each layout engines write: Docker 24's
docker-archive, Docker 25+'s OCI layout (plain layers on the classic store, gzipped ones on the
containerd store), Podman 5's docker-archive with linked ``layer.tar`` files; and one typed error
for every stream that is none of them."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envkit.errors import DaemonError
from envkit.images import facts as facts_module
from envkit.images.archive import Blob
from envkit.images.facts import FactsCache, ImageFacts, Node, UnreadableImage, apply_layer, read_image

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


# -- building archives ---------------------------------------------------------------------------


def _info(name: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.linkname = kind, mode, uid, gid, link
    return info


def _dir(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, tarfile.DIRTYPE, mode), b""


def _file(name: str, mode: int = 0o644, uid: int = 0, data: bytes = b"") -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, tarfile.REGTYPE, mode, uid, uid), data


def _symlink(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, tarfile.SYMTYPE, 0o777, link=target), b""


def _tar(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


@dataclass(frozen=True)
class Link:
    """A member of a save stream that is a link: a symlink (relative to its directory, as
    Podman writes them) or a hard link (an archive path)."""

    target: str
    hard: bool = False


Member = tuple[str, "bytes | Link | None"]  # None: a directory


def _save(*members: Member) -> bytes:
    entries: list[tuple[tarfile.TarInfo, bytes]] = []
    for name, content in members:
        if content is None:
            entries.append(_dir(name))
        elif isinstance(content, Link):
            kind = tarfile.LNKTYPE if content.hard else tarfile.SYMTYPE
            entries.append((_info(name, kind, 0o777, link=content.target), b""))
        else:
            entries.append(_file(name, data=content))
    return _tar(entries)


def _chunks(raw: bytes, size: int = 1000) -> Iterator[bytes]:
    return iter([raw[i : i + size] for i in range(0, len(raw), size)])


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


# Two layers: the second hides /etc/passwd, empties /var (opaque) and adds /x/y.
BASE = _tar(
    [
        _dir("bin"),
        _file("bin/busybox", 0o755, data=b"\x7fELF..."),
        _symlink("bin/sh", "busybox"),
        _dir("etc"),
        _file("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n"),
        _dir("tmp", 0o1777),
        _dir("var"),
        _dir("var/lib"),
        _file("var/lib/a"),
    ]
)
TOP = _tar(
    [
        _dir("etc"),
        _file("etc/.wh.passwd"),
        _dir("var"),
        _file("var/.wh..wh..opq"),
        _file("var/b", 0o600),
        _dir("x", 0o700),
        _file("x/y", 0o640, uid=1000),
    ]
)
TREE = {
    "bin": Node("d", 0o755, 0, 0),
    "bin/busybox": Node("f", 0o755, 0, 0),
    "bin/sh": Node("l", 0o777, 0, 0, "busybox"),
    "etc": Node("d", 0o755, 0, 0),
    "tmp": Node("d", 0o1777, 0, 0),
    "var": Node("d", 0o755, 0, 0),
    "var/b": Node("f", 0o600, 0, 0),
    "x": Node("d", 0o700, 0, 0),
    "x/y": Node("f", 0o640, 1000, 1000),
}
CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "Labels": {"envkit.stack": "t"}},
    "rootfs": {"type": "layers", "diff_ids": [f"sha256:{_sha(BASE)}", f"sha256:{_sha(TOP)}"]},
    "history": [{"created_by": "import"}, {"created_by": "RUN mkdir /x"}],
}
RAW_CONFIG = _json(CONFIG)
CONFIG_ID = _sha(RAW_CONFIG)


def legacy() -> bytes:
    """Docker <= 24: ``<v1 id>/layer.tar``, ``json``, ``VERSION``, ``<config id>.json``."""
    one, two = "a1" * 32, "b2" * 32
    return _save(
        (f"{CONFIG_ID}.json", RAW_CONFIG),
        (f"{one}/", None),
        (f"{one}/VERSION", b"1.0"),
        (f"{one}/json", _json({"id": one, "created": "1970-01-01T00:00:00Z"})),
        (f"{one}/layer.tar", BASE),
        (f"{two}/", None),
        (f"{two}/VERSION", b"1.0"),
        (f"{two}/json", _json({"id": two, "parent": one})),
        (f"{two}/layer.tar", TOP),
        (
            "manifest.json",
            _json(
                [
                    {
                        "Config": f"{CONFIG_ID}.json",
                        "RepoTags": ["t:1"],
                        "Layers": [f"{one}/layer.tar", f"{two}/layer.tar"],
                    }
                ]
            ),
        ),
        ("repositories", _json({"t": {"1": two}})),
    )


def _descriptor(media_type: str, data: bytes, **more: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": f"sha256:{_sha(data)}", "size": len(data), **more}


def oci(*, gzipped: bool, manifest_json: bool = True, nested: bool = False) -> tuple[bytes, list[Blob]]:
    """Docker >= 25: every file a blob; gzipped layers on the containerd store; blobs sorted by
    digest and first, ``index.json`` last (the documents that name blobs come after them)."""
    layers = [_gzip(BASE), _gzip(TOP)] if gzipped else [BASE, TOP]
    media_type = OCI_GZIP if gzipped else OCI_TAR
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(OCI_CONFIG, RAW_CONFIG),
            "layers": [_descriptor(media_type, layer) for layer in layers],
        }
    )
    blobs = {_sha(data): data for data in [RAW_CONFIG, manifest, *layers]}
    top = _descriptor(OCI_MANIFEST, manifest, annotations={"org.opencontainers.image.ref.name": "1"})
    if nested:  # a multi-platform image: another platform not saved, and an attestation
        attestation = _json({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}, "layers": []})
        image_index = _json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        **_descriptor(OCI_MANIFEST, b"arm"),
                        "platform": {"architecture": "arm64", "os": "linux"},
                    },
                    _descriptor(
                        OCI_MANIFEST,
                        attestation,
                        platform={"architecture": "unknown", "os": "unknown"},
                        annotations={"vnd.docker.reference.type": "attestation-manifest"},
                    ),
                    _descriptor(OCI_MANIFEST, manifest, platform={"architecture": "amd64", "os": "linux"}),
                ],
            }
        )
        blobs |= {_sha(attestation): attestation, _sha(image_index): image_index}
        top = _descriptor(OCI_INDEX, image_index)
    members: list[Member] = [("blobs/", None), ("blobs/sha256/", None)]
    members += [(f"blobs/sha256/{digest}", data) for digest, data in sorted(blobs.items())]
    if manifest_json:
        paths = [f"blobs/sha256/{_sha(layer)}" for layer in layers]
        members.append(
            (
                "manifest.json",
                _json([{"Config": f"blobs/sha256/{CONFIG_ID}", "RepoTags": ["t:1"], "Layers": paths}]),
            )
        )
    members += [
        ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
        ("index.json", _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [top]})),
    ]
    expected = [Blob(f"sha256:{_sha(layer)}", len(layer), media_type) for layer in layers]
    return _save(*members), expected


def podman(*, name_links: bool, hard: bool = False) -> bytes:
    """Podman 5: ``<diff id>.tar`` files, and ``<id>/layer.tar`` links to them (which its
    manifest.json does not name; ``name_links`` makes it name them, as a check that links are
    followed, with the links before their targets)."""
    one, two = _sha(BASE), _sha(TOP)
    v1 = {one: "c3" * 32, two: "d4" * 32}

    def link(diff_id: str) -> Link:
        return Link(f"{diff_id}.tar", hard=True) if hard else Link(f"../{diff_id}.tar")

    links: list[Member] = []
    for diff_id in (one, two):
        links += [
            (f"{v1[diff_id]}/layer.tar", link(diff_id)),
            (f"{v1[diff_id]}/VERSION", b"1.0"),
            (f"{v1[diff_id]}/json", _json({"id": v1[diff_id]})),
        ]
    files: list[Member] = [(f"{one}.tar", BASE), (f"{two}.tar", TOP), (f"{CONFIG_ID}.json", RAW_CONFIG)]
    layers = [f"{v1[one]}/layer.tar", f"{v1[two]}/layer.tar"] if name_links else [f"{one}.tar", f"{two}.tar"]
    manifest: Member = (
        "manifest.json",
        _json([{"Config": f"{CONFIG_ID}.json", "RepoTags": ["docker.io/t:1"], "Layers": layers}]),
    )
    if hard:  # a hard link names a member that came before it
        return _save(*files, *links, manifest)
    return _save(*links, *files, manifest) if name_links else _save(*files, *links, manifest)


LAYOUTS = {
    "legacy": legacy(),
    "oci-plain": oci(gzipped=False)[0],
    "oci-gzip": oci(gzipped=True)[0],
    "oci-gzip-nested": oci(gzipped=True, nested=True)[0],
    "oci-index-only": oci(gzipped=True, manifest_json=False)[0],
    "podman": podman(name_links=False),
    "podman-links-named": podman(name_links=True),
    "podman-hard-links": podman(name_links=True, hard=True),
}


# -- every layout ---------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_each_layout_gives_the_config_and_the_tree(layout: str) -> None:
    facts = read_image(_chunks(LAYOUTS[layout]))
    assert facts.config == CONFIG
    assert facts.tree == TREE


@pytest.mark.parametrize(
    ("gzipped", "manifest_json", "nested"),
    [
        (False, True, False),
        (True, True, False),
        (True, True, True),
        (True, False, False),
        (False, False, True),
    ],
)
def test_the_oci_layout_gives_the_layers_as_its_manifest_names_them(
    gzipped: bool, manifest_json: bool, nested: bool
) -> None:
    raw, blobs = oci(gzipped=gzipped, manifest_json=manifest_json, nested=nested)
    facts = read_image(_chunks(raw))
    assert (facts.config, facts.tree, facts.layers) == (CONFIG, TREE, blobs)
    assert ImageFacts.from_json(json.loads(json.dumps(facts.to_json()))) == facts


@pytest.mark.parametrize("layout", ["legacy", "podman"])
def test_a_docker_archive_alone_leaves_the_blobs_unknown(layout: str) -> None:
    assert read_image(_chunks(LAYOUTS[layout])).layers == []


def test_chunk_sizes_do_not_matter() -> None:
    raw = LAYOUTS["oci-gzip"]
    assert read_image(_chunks(raw, 1)).tree == read_image([raw]).tree == TREE


def test_a_layer_listed_twice_through_a_link_is_applied_twice() -> None:
    """Docker <= 24 writes a layer an image has twice once, and a symlink for the second."""
    again = _tar([_file("etc/passwd")])
    raw = _save(
        ("c.json", RAW_CONFIG),
        ("one/layer.tar", again),
        ("two/layer.tar", TOP),
        ("three/layer.tar", Link("../one/layer.tar")),
        (
            "manifest.json",
            _json([{"Config": "c.json", "Layers": ["one/layer.tar", "two/layer.tar", "three/layer.tar"]}]),
        ),
    )
    tree = read_image(_chunks(raw)).tree
    assert tree["etc/passwd"] == Node("f", 0o644, 0, 0)  # hidden by TOP, back from the link


# -- whiteouts ---------------------------------------------------------------------------------------


def _apply(*layers: list[tuple[tarfile.TarInfo, bytes]]) -> dict[str, Node]:
    tree: dict[str, Node] = {}
    for layer in layers:
        apply_layer(tree, [info for info, _ in layer])
    return tree


def test_whiteouts_hide_the_layers_below_not_their_own_wherever_they_stand() -> None:
    below = [
        _dir("a"),
        _file("a/old"),
        _dir("a/sub"),
        _file("a/sub/deep"),
        _file("f"),
        _dir("g"),
        _file("g/h"),
    ]
    # the opaque marker after the layer's own entries, a whiteout before the file it replaces
    layer = [_dir("a"), _file("a/new"), _file("a/.wh..wh..opq"), _file(".wh.f"), _file("f", 0o600)]
    tree = _apply(below, layer, [_file(".wh.g")])
    assert tree == {
        "a": Node("d", 0o755, 0, 0),
        "a/new": Node("f", 0o644, 0, 0),
        "f": Node("f", 0o600, 0, 0),
    }


def test_an_opaque_root_and_a_directory_replaced_by_a_file() -> None:
    tree = _apply([_dir("a"), _file("a/b"), _file("c")], [_file(".wh..wh..opq"), _file("d")])
    assert tree == {"d": Node("f", 0o644, 0, 0)}
    # a layer may list a file without its parents: replacing or hiding the parent still takes it
    tree = _apply([_file("p/q/r"), _file("p/s")], [_symlink("p", "/elsewhere")])
    assert tree == {"p": Node("l", 0o777, 0, 0, "/elsewhere")}
    tree = _apply([_file("p/q/r"), _file("p/s"), _file("t")], [_file("p/.wh.q")])
    assert set(tree) == {"p/s", "t"}


def test_names_spelled_with_dot_slash_are_the_same_paths() -> None:
    tree = _apply([_dir("./etc"), _file("./etc/a"), _file("./etc/b")], [_file("./etc/.wh.a")])
    assert set(tree) == {"etc", "etc/b"}


# -- unreadable streams -----------------------------------------------------------------------------


def _unreadable(raw: bytes | list[bytes], image: str = "sha256:abc") -> str:
    with pytest.raises(UnreadableImage) as caught:
        read_image(_chunks(raw) if isinstance(raw, bytes) else iter(raw), image=image)
    assert caught.value.image == image
    assert str(caught.value) == f"docker save of {image} {caught.value.reason}"
    return caught.value.reason


def _manifest(config: str, layers: list[str]) -> Member:
    return "manifest.json", _json([{"Config": config, "Layers": layers}])


def test_the_error_names_the_image_and_what_is_missing() -> None:
    assert _unreadable(_save(("l/layer.tar", BASE))) == "has no manifest.json or index.json"
    with pytest.raises(UnreadableImage, match=r"^docker save has no manifest\.json or index\.json$"):
        read_image(_chunks(_save(("l/layer.tar", BASE))))


def _index_to(document: bytes) -> list[Member]:
    """An OCI index.json naming one manifest, and that manifest as a blob."""
    index = _json({"manifests": [_descriptor(OCI_MANIFEST, document)]})
    return [(f"blobs/sha256/{_sha(document)}", document), ("index.json", index)]


LOOP = _json({"manifests": [{"mediaType": OCI_INDEX, "digest": f"sha256:{'e' * 64}", "size": 1}]})


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        (
            [("c.json", RAW_CONFIG), _manifest("c.json", ["l/layer.tar"])],
            "names a layer l/layer.tar that it does not carry",
        ),
        (
            [("l/layer.tar", BASE), _manifest("c.json", ["l/layer.tar"])],
            "names a config c.json that it does not carry",
        ),
        (
            [
                ("c.json", RAW_CONFIG),
                ("l/layer.tar", b"this is no tar " * 100),
                _manifest("c.json", ["l/layer.tar"]),
            ],
            "has a layer l/layer.tar that is not a tar (ReadError: invalid header)",
        ),
        (
            [("c.json", RAW_CONFIG), ("l/layer.tar", b""), _manifest("c.json", ["l/layer.tar"])],
            "has a layer l/layer.tar that is not a tar (ReadError: empty file)",
        ),
        (
            [
                ("c.json", RAW_CONFIG),
                ("l/layer.tar", b"\x1f\x8b\x08\x00junk"),
                _manifest("c.json", ["l/layer.tar"]),
            ],
            "has a layer l/layer.tar that is not a tar (",
        ),
        (
            [
                ("c.json", RAW_CONFIG),
                ("l/layer.tar", _gzip(BASE)[:-30]),
                _manifest("c.json", ["l/layer.tar"]),
            ],
            "has a layer l/layer.tar that is not a tar (",
        ),
        (
            [("c.json", RAW_CONFIG), ("l/layer.tar", b"[1]"), _manifest("c.json", ["l/layer.tar"])],
            "has a layer l/layer.tar that is a JSON document, not a tar",
        ),
        ([("c.json", b'{"config": '), _manifest("c.json", [])], "has a config c.json that is not JSON ("),
        ([("c.json", b"[1, 2]"), _manifest("c.json", [])], "has a config c.json that is not a JSON object"),
        ([("c.json", b"plain text"), _manifest("c.json", [])], "has a config c.json that is not JSON"),
        ([("c.json", BASE), _manifest("c.json", [])], "has a config c.json that is a tar, not JSON"),
        ([("manifest.json", b'[{"Config": "c.json", ')], "has a manifest manifest.json that is not JSON ("),
        (
            [("manifest.json", b'{"Config": "c.json", "Layers": []}')],
            "has a manifest.json without an image's",
        ),
        ([("manifest.json", b"[]")], "has a manifest.json without an image's Config and Layers"),
        (
            [("manifest.json", b'[{"Config": "c.json", "Layers": [1]}]')],
            "has a manifest.json without an image's",
        ),
        (
            [("manifest.json", b"[" * 100_000 + b"]" * 100_000)],
            "has a manifest manifest.json that is not JSON (",
        ),
        (
            [
                ("c.json", RAW_CONFIG),
                ("a/layer.tar", Link("../b/layer.tar")),
                ("b/layer.tar", Link("../a/layer.tar")),
                _manifest("c.json", ["a/layer.tar"]),
            ],
            "has links from a/layer.tar that do not end (a loop?)",
        ),
        (
            [
                ("c.json", RAW_CONFIG),
                ("a/layer.tar", Link("../gone.tar")),
                _manifest("c.json", ["a/layer.tar"]),
            ],
            "names a layer a/layer.tar that it does not carry",
        ),
        ([("index.json", b'{"manifests": []}')], "has an OCI index that lists no manifests"),
        (
            [("index.json", b'{"manifests": [{"digest": "sha256:../../x"}]}')],
            "has an OCI descriptor without a usable digest",
        ),
        (
            [("index.json", _json({"manifests": [_descriptor(OCI_MANIFEST, b"m")]}))],
            f"names a manifest blobs/sha256/{_sha(b'm')} that it does not carry",
        ),
        (
            [
                (
                    "index.json",
                    _json(
                        {
                            "manifests": [
                                _descriptor(OCI_MANIFEST, b"m", platform={"os": "windows"}),
                                _descriptor(OCI_MANIFEST, b"n", platform={"os": "freebsd"}),
                            ]
                        }
                    ),
                )
            ],
            "has an OCI index of 2 manifests, none for Linux",
        ),
        (_index_to(b"{}"), "has an OCI manifest without layers"),
        (
            _index_to(
                _json({"config": _descriptor(OCI_CONFIG, RAW_CONFIG), "layers": [{"digest": "sha256:0"}]})
            ),
            "has an OCI layer descriptor without size or type",
        ),
        (
            # digests are not checked (the engine wrote them), so an index can name itself
            [(f"blobs/sha256/{'e' * 64}", LOOP), ("index.json", LOOP)],
            "nests OCI indexes more than 4 deep",
        ),
    ],
)
def test_each_unexpected_thing_is_one_error_saying_what(members: list[Member], reason: str) -> None:
    assert _unreadable(_save(*members)).startswith(reason)


def test_a_config_too_large_to_be_one_is_not_kept() -> None:
    big = b'{"pad": "' + b"x" * facts_module.JSON_LIMIT + b'"}'
    reason = _unreadable(_save(("c.json", big), _manifest("c.json", [])))
    assert reason == f"has a config c.json that is a JSON document of {len(big)} bytes, more than is read"


@pytest.mark.skipif(facts_module._ZSTD is not None, reason="this Python decompresses zstd")
def test_a_zstd_layer_is_unreadable_without_a_decoder() -> None:
    zstd = b"\x28\xb5\x2f\xfd" + b"\x00" * 64  # the magic number decides, not the name or media type
    members: list[Member] = [
        ("c.json", RAW_CONFIG),
        ("blobs/sha256/ab", zstd),
        _manifest("c.json", ["blobs/sha256/ab"]),
    ]
    reason = _unreadable(_save(*members))
    assert (
        reason
        == "has a layer blobs/sha256/ab that is compressed with zstd, which this Python cannot decompress"
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ([], "is not a tar archive read to its end (ReadError: empty file)"),
        ([b"not a tar at all\n" * 64], "is not a tar archive read to its end (ReadError: invalid header)"),
        ([_gzip(LAYOUTS["legacy"])], "is not a tar archive read to its end (ReadError: invalid header)"),
        (
            [LAYOUTS["legacy"][:700]],
            "is not a tar archive read to its end (ReadError: unexpected end of data)",
        ),
    ],
)
def test_a_stream_that_is_no_tar_or_ends_early(raw: list[bytes], reason: str) -> None:
    assert _unreadable(raw) == reason


def test_a_stream_cut_inside_a_layer() -> None:
    raw = LAYOUTS["legacy"]
    cut = raw.index(b"etc/.wh.passwd")  # inside the second layer.tar
    assert "unexpected end of data" in _unreadable(raw[:cut])


@pytest.mark.parametrize("error", [DaemonError("the engine went away"), ConnectionResetError("reset")])
def test_the_sources_own_errors_pass_unchanged(error: Exception) -> None:
    def chunks() -> Iterator[bytes]:
        raw = LAYOUTS["oci-gzip"]
        yield raw[: len(raw) // 2]
        raise error

    with pytest.raises(type(error)) as caught:
        read_image(chunks())
    assert caught.value is error


class _Saving:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.saves = 0

    def save(self, image: str, *, stall: float | None) -> Iterator[bytes]:
        self.saves += 1
        return _chunks(self.raw)


def test_the_cache_keeps_no_facts_of_an_unreadable_image(tmp_path: Path) -> None:
    daemon = _Saving(b"not a tar at all\n" * 64)
    cache = FactsCache(tmp_path)
    for _ in range(2):
        with pytest.raises(UnreadableImage, match=r"^docker save of sha256:abc is not a tar archive"):
            cache.get(daemon, "sha256:abc", stall=None)  # type: ignore[arg-type]
    assert daemon.saves == 2
    daemon.raw = LAYOUTS["podman"]
    assert cache.get(daemon, "sha256:abc", stall=None).tree == TREE  # type: ignore[arg-type]
    assert cache.get(daemon, "sha256:abc", stall=None).config == CONFIG  # type: ignore[arg-type]
    assert daemon.saves == 3


# -- any bytes --------------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None)


def _facts_or_unreadable(raw: bytes, size: int = 997) -> ImageFacts | None:
    try:
        return read_image(_chunks(raw, size))
    except UnreadableImage:
        return None


@FUZZ
@given(raw=st.binary(max_size=3000))
def test_any_bytes_are_facts_or_unreadable(raw: bytes) -> None:
    _facts_or_unreadable(raw)


@FUZZ
@given(layout=st.sampled_from(sorted(LAYOUTS)), data=st.data())
def test_a_save_cut_anywhere_is_the_facts_or_unreadable(layout: str, data: st.DataObject) -> None:
    raw = LAYOUTS[layout]
    cut = data.draw(st.integers(0, len(raw)))
    found = _facts_or_unreadable(raw[:cut], data.draw(st.integers(1, 5000)))
    if found is not None:  # a cut the reader cannot tell from an end leaves nothing it needs out
        assert (found.config, found.tree) == (CONFIG, TREE)


@FUZZ
@given(
    layout=st.sampled_from(sorted(LAYOUTS)),
    changes=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8
    ),
)
def test_a_save_with_bytes_changed_is_facts_or_unreadable(
    layout: str, changes: list[tuple[float, int]]
) -> None:
    raw = bytearray(LAYOUTS[layout])
    for where, value in changes:
        raw[int(where * len(raw))] = value
    _facts_or_unreadable(bytes(raw))
