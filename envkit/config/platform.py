"""Platforms as Docker and the OCI image specification write them: ``os/arch[/variant]``.

envkit.toml's ``platform`` is part of an image's key and becomes the image config's ``os`` and
``architecture``, so it must be one of the values the OCI specification uses (Go's ``GOOS`` and
``GOARCH``, as containerd's ``platforms`` package knows them) in their canonical spelling. The
aliases Docker also accepts (``x86_64``, ``aarch64``, ``armhf``...) are refused with the
canonical value to write instead: two spellings of one platform would be two keys.
"""

from __future__ import annotations

OPERATING_SYSTEMS = frozenset({
    "aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js", "linux", "nacl",
    "netbsd", "openbsd", "plan9", "solaris", "windows", "zos",
})  # fmt: skip
ARCHITECTURES = frozenset({
    "386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "loong64", "mips", "mipsle", "mips64",
    "mips64le", "mips64p32", "mips64p32le", "ppc", "ppc64", "ppc64le", "riscv", "riscv64", "s390", "s390x",
    "sparc", "sparc64", "wasm",
})  # fmt: skip
# The architectures that have variants, and theirs (OCI: arm v6-v8, arm64 v8; containerd adds
# arm v5, arm64's v8.x and v9.x, and amd64's microarchitecture levels v1-v4).
VARIANTS = {
    "arm": frozenset({"v5", "v6", "v7", "v8"}),
    "arm64": frozenset({"v8", "v9"} | {f"v8.{i}" for i in range(10)} | {f"v9.{i}" for i in range(6)}),
    "amd64": frozenset({"v1", "v2", "v3", "v4"}),
}
# Docker's other spellings (containerd's normalizeOS and normalizeArch) -> the canonical ones.
_OS_ALIASES = {"macos": "darwin"}
_ARCH_ALIASES = {
    "i386": "386",
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armhf": "arm/v7",
    "armel": "arm/v6",
}
_EXAMPLES = '"linux/amd64", "linux/arm64" or "linux/arm/v7"'


def problem(value: str) -> tuple[str, str] | None:
    """Why ``value`` is not a platform, and the value to write instead (quoted, or examples),
    or None when it is one."""
    parts = value.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        return f"{value!r} is not a platform: write it as os/arch or os/arch/variant", _EXAMPLES
    os_name, arch, variant = parts[0], parts[1], parts[2] if len(parts) == 3 else None
    canonical = _canonical(os_name, arch, variant)
    if canonical is None:
        return f"{value!r} is not a platform: {arch!r} already names a variant", _EXAMPLES
    fixed_os, fixed_arch, fixed_variant = canonical
    variants = VARIANTS.get(fixed_arch, frozenset())
    if fixed_os not in OPERATING_SYSTEMS:
        found = f"{os_name!r} is not an operating system Docker knows ({_known(OPERATING_SYSTEMS)})"
    elif fixed_arch not in ARCHITECTURES:
        found = f"{arch!r} is not an architecture Docker knows ({_known(ARCHITECTURES)})"
    elif fixed_variant is not None and fixed_variant not in variants:
        known = f"its variants: {_known(variants)}" if variants else "it has none"
        return f"{variant!r} is not a variant of {fixed_arch} ({known})", f'"{fixed_os}/{fixed_arch}"'
    else:
        written = "/".join([fixed_os, fixed_arch, *([fixed_variant] if fixed_variant else [])])
        if written == value:
            return None
        return f"{value!r} is Docker's other spelling of {written!r}", f'"{written}"'
    return found, _EXAMPLES


def _canonical(os_name: str, arch: str, variant: str | None) -> tuple[str, str, str | None] | None:
    """Docker's reading of a platform's parts, in their canonical spelling (None: an alias that
    names a variant, given another)."""
    fixed_os = _OS_ALIASES.get(os_name.lower(), os_name.lower())
    fixed_arch = _ARCH_ALIASES.get(arch.lower(), arch.lower())
    fixed_variant = None if variant is None else variant.lower()
    if fixed_arch in VARIANTS and fixed_variant is not None and fixed_variant[:1].isdigit():
        fixed_variant = "v" + fixed_variant  # Docker reads linux/arm/7 as linux/arm/v7
    if "/" in fixed_arch:
        if fixed_variant is not None:
            return None
        fixed_arch, fixed_variant = fixed_arch.split("/")
    return fixed_os, fixed_arch, fixed_variant


def _known(values: frozenset[str]) -> str:
    return ", ".join(sorted(values))
