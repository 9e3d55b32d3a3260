"""The differential corpus: small Dockerfiles without RUN, each built by envkit's assembler and
by the classic builder in tests/integration/test_assembler.py, which must agree on every file and
on the config.

``{base}`` in a Dockerfile is the busybox test image (an external base: ENV PATH=/bin, CMD sh);
``FROM parent`` is a stack image (images/parent, see PARENT) built first. A file's value is its
text, ``(text, mode)`` for another mode, or ``"-> target"`` for a symlink.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FileValue = str | tuple[str, int]


@dataclass(frozen=True)
class Case:
    id: str
    dockerfile: str
    files: dict[str, FileValue] = field(default_factory=dict)
    ignore: str | None = None  # the .dockerignore
    args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    parent: bool = False  # builds FROM the stack image ``parent``


# A stack image the parent cases build on: labels, env, a CMD, a workdir and files of its own.
PARENT = """\
FROM {base}
LABEL org.example.team="core" org.example.tier=base
ENV APP_HOME=/srv/app PATH=/usr/local/bin:/bin
WORKDIR /srv/app
COPY --chown=1000:1000 parent.txt /srv/app/
CMD ["sh", "-c", "echo parent"]
"""
PARENT_FILES: dict[str, FileValue] = {"parent.txt": "from the parent\n"}

# A parent stage (in the case itself) that sets variables after the base's PATH.
VARS = "FROM {base} AS vars\nLABEL envkit.project={stack}\nENV FIRST=1 MIDDLE=2 LAST=3\n"

SRC = {
    "src/main.py": "print('main')\n",
    "src/util/helpers.py": "X = 1\n",
    "src/util/__init__.py": "",
    "src/run.sh": ("#!/bin/sh\necho run\n", 0o755),
    "README.md": "readme\n",
}

CASES: list[Case] = [
    # paths a created container holds only through the engine's init layer (the base has no
    # /proc nor /dev): the classic builder does not see them, so they are made with the owner
    Case(
        "copy-under-init-layer-paths",
        "FROM {base}\nCOPY --chown=1000:1000 f.txt /proc/x/f.txt\nCOPY f.txt /dev/\nCOPY f.txt /etc/hosts\n",
        {"f.txt": "f\n"},
    ),
    Case("scratch-copy", "FROM scratch\nCOPY hello.txt /hello.txt\n", {"hello.txt": "hello\n"}),
    Case(
        "scratch-tree-and-config",
        'FROM scratch\nCOPY src /app\nENV A=1\nWORKDIR /app\nCMD ["/app/run.sh"]\n',
        SRC,
    ),
    Case("file-into-dir-slash", "FROM {base}\nCOPY a.txt /app/\n", {"a.txt": "a\n"}),
    Case("file-renamed", "FROM {base}\nCOPY a.txt /app/renamed.txt\n", {"a.txt": "a\n"}),
    Case("file-into-existing-dir-no-slash", "FROM {base}\nCOPY a.txt /etc\n", {"a.txt": "a\n"}),
    Case("dir-copies-its-contents", "FROM {base}\nCOPY src /app\n", SRC),
    Case("dir-into-new-deep-path", "FROM {base}\nCOPY src/util /opt/deep/er/lib/\n", SRC),
    Case("whole-context", "FROM {base}\nCOPY . /app\n", SRC),
    Case("whole-context-to-root-of-dir-twice", "FROM {base}\nCOPY . /app/\nCOPY src/ /app/src2\n", SRC),
    Case("wildcard-star", "FROM {base}\nCOPY *.txt /dst/\n", {"a.txt": "a", "b.txt": "b", "c.md": "c"}),
    Case("wildcard-question", "FROM {base}\nCOPY ?.txt /dst/\n", {"a.txt": "a", "bb.txt": "b", "c.txt": "c"}),
    Case("wildcard-class", "FROM {base}\nCOPY [ab].txt /dst/\n", {"a.txt": "a", "b.txt": "b", "c.txt": "c"}),
    Case("wildcard-in-dir", "FROM {base}\nCOPY src/*.py /py/\n", SRC),
    Case("wildcard-matches-a-dir", "FROM {base}\nCOPY sr* /dst/\n", SRC),
    Case(
        "several-sources", "FROM {base}\nCOPY a.txt b.txt src /multi/\n", {"a.txt": "a", "b.txt": "b", **SRC}
    ),
    Case("chown-numeric-pair", "FROM {base}\nCOPY --chown=1000:1000 src /app\n", SRC),
    Case("chown-uid-only", "FROM {base}\nCOPY --chown=42 a.txt /owned/a.txt\n", {"a.txt": "a"}),
    Case(
        "chown-from-arg",
        "FROM {base}\nARG UID=7\nCOPY --chown=${UID}:${UID} a.txt /o/\n",
        {"a.txt": "a"},
        args={"UID": "1234"},
    ),
    Case(
        "workdir-relative-dest",
        "FROM {base}\nWORKDIR /w/x\nCOPY a.txt rel/\nCOPY b.txt .\n",
        {"a.txt": "a", "b.txt": "b"},
    ),
    Case(
        "workdir-chain",
        "FROM {base}\nWORKDIR /a\nWORKDIR b\nWORKDIR ../c/./d\nCOPY a.txt .\n",
        {"a.txt": "a"},
    ),
    Case("workdir-existing", "FROM {base}\nWORKDIR /tmp\nWORKDIR /etc\n"),
    Case("user-then-workdir", "FROM {base}\nUSER 1000:1000\nWORKDIR /home/u\nCOPY a.txt .\n", {"a.txt": "a"}),
    Case(
        "env-substitution",
        "FROM {base}\nENV DIR=/opt/x NAME=app\nCOPY a.txt $DIR/${NAME}.txt\nWORKDIR ${DIR}\n"
        'LABEL where="$DIR" who=${NAME}\n',
        {"a.txt": "a"},
    ),
    Case(
        "env-default-and-alternative",
        "FROM {base}\nENV SET=yes\n"
        "ENV A=${UNSET:-fallback} B=${SET:-nope} C=${SET:+alt} D=${UNSET:+never} E=\\$LITERAL\n",
    ),
    Case("env-legacy-form", "FROM {base}\nENV GREETING hello  big world\n"),
    Case("env-overrides-path", "FROM {base}\nENV PATH=/opt/bin:$PATH\n"),
    # ENV replacing a variable keeps its place in Env (only a new name is appended): the parent
    # stage VARS sets FIRST, MIDDLE, LAST after the base's PATH; the child overrides each.
    Case(
        "env-override-inherited-first-middle-last",
        VARS + "FROM vars\nENV PATH=/opt/bin:$PATH\nENV MIDDLE=m-$MIDDLE\nENV FIRST=${FIRST}-f\n"
        "ENV LAST=$LAST:l\n",
    ),
    Case(
        "env-override-inherited-one-line-with-new",
        VARS + "FROM vars\nENV NEW=n LAST=$LAST-l FIRST=$FIRST-f OTHER=$NEW MIDDLE=$LAST PATH=$PATH:/x\n",
    ),
    Case(
        "env-override-inherited-twice-on-one-line",
        VARS + "FROM vars\nENV X=1 MIDDLE=a X=2 MIDDLE=b$MIDDLE FIRST=one FIRST=two$FIRST\n",
    ),
    Case("env-override-inherited-legacy-form", VARS + "FROM vars\nENV MIDDLE legacy $MIDDLE and $LAST\n"),
    Case(
        "env-override-inherited-with-arg",
        VARS + "FROM vars\nARG MIDDLE=arg\nARG GIVEN\nENV FIRST=$MIDDLE MIDDLE=$GIVEN LAST=$MIDDLE\n"
        "ENV GIVEN=$GIVEN-env MIDDLE=$MIDDLE+\n",
        args={"MIDDLE": "given-middle", "GIVEN": "given"},
    ),
    Case(
        "env-override-earlier-in-the-same-stage",
        "FROM {base}\nENV A=1 B=2 C=3\nENV B=x$B A=y$A\nENV C=$C$C D=4 A=z\n",
    ),
    Case(
        "parent-env-override",
        "FROM parent\nENV PATH=/opt/bin:$PATH APP_HOME=$APP_HOME/v2 EXTRA=1\nENV PATH=$PATH:/z\n",
        parent=True,
    ),
    Case("env-quoted", "FROM {base}\nENV Q=\"a b\" R='c $d' S=e\\ f\n"),
    Case(
        "arg-defaults-and-build-args",
        "FROM {base}\nARG GIVEN=default\nARG DEFAULTED=kept\nARG EMPTY\n"
        "ENV G=$GIVEN D=$DEFAULTED E=${EMPTY:-none}\nLABEL given=$GIVEN\n",
        args={"GIVEN": "from-args"},
    ),
    Case(
        "global-arg-in-from",
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG BASE_IMAGE\nENV B=$BASE_IMAGE\n",
        args={"BASE_IMAGE": "{base}"},
    ),
    Case("arg-shadowed-by-env", "FROM {base}\nARG V=arg\nENV V=env\nENV W=$V\n", args={"V": "given"}),
    Case(
        "labels",
        'FROM {base}\nLABEL a=1 "b c"="d e" multi="line \\\n continued"\nLABEL a=2\n',
    ),
    Case("user-name", "FROM {base}\nUSER nobody\n"),
    Case("user-pair", "FROM {base}\nUSER 1000:2000\n"),
    Case("expose", "FROM {base}\nEXPOSE 80 443/udp 8000-8002/tcp\nEXPOSE 9000\n"),
    Case("volume-json", 'FROM {base}\nVOLUME ["/data", "/logs"]\n'),
    Case("volume-plain", "FROM {base}\nENV V=/v\nVOLUME /a $V\n"),
    Case("cmd-shell-form", "FROM {base}\nCMD echo hello world\n"),
    Case("cmd-exec-form", 'FROM {base}\nCMD ["sh", "-c", "echo hi"]\n'),
    Case("entrypoint-and-cmd", 'FROM {base}\nENTRYPOINT ["sh", "-c"]\nCMD ["echo hi"]\n'),
    Case("entrypoint-resets-inherited-cmd", "FROM {base}\nENTRYPOINT echo entry\n"),
    Case("cmd-then-entrypoint-keeps-cmd", 'FROM {base}\nCMD ["x"]\nENTRYPOINT ["sh"]\n'),
    Case("shell", 'FROM {base}\nSHELL ["/bin/sh", "-ec"]\nCMD echo with the new shell\n'),
    Case("stopsignal", "FROM {base}\nSTOPSIGNAL SIGINT\n"),
    Case(
        "healthcheck-exec",
        'FROM {base}\nHEALTHCHECK --interval=5s --timeout=2s --start-period=1m30s --retries=3 CMD ["true"]\n',
    ),
    Case("healthcheck-shell", "FROM {base}\nHEALTHCHECK CMD wget -q -O- http://127.0.0.1/ || exit 1\n"),
    Case("healthcheck-none", "FROM {base}\nHEALTHCHECK NONE\n"),
    Case(
        "multi-stage-target",
        "FROM {base} AS one\nLABEL envkit.project={stack}\nCOPY a.txt /one/\n"
        "FROM one AS two\nCOPY b.txt /two/\nENV STAGE=two\n"
        "FROM {base} AS three\nLABEL envkit.project={stack}\nCOPY c.txt /three/\n",
        {"a.txt": "a", "b.txt": "b", "c.txt": "c"},
        target="two",
    ),
    Case(
        "multi-stage-last",
        "FROM {base} AS first\nLABEL envkit.project={stack}\nENV ONLY_IN_FIRST=1\nCOPY a.txt /first/\n"
        "FROM {base}\nCOPY b.txt /b.txt\n",
        {"a.txt": "a", "b.txt": "b"},
    ),
    Case(
        "dockerignore",
        "FROM {base}\nCOPY . /app/\n",
        {**SRC, "debug.log": "x", "keep.log": "k"},
        "*.log\n!keep.log\n",
    ),
    Case(
        "dockerignore-dir", "FROM {base}\nCOPY . /app/\n", {**SRC, "src/util/secret.txt": "s"}, "src/util\n"
    ),
    Case(
        "symlink", "FROM {base}\nCOPY . /app/\n", {"a.txt": "a", "link": "-> a.txt", "dangling": "-> nowhere"}
    ),
    Case(
        "symlink-source",
        "FROM {base}\nCOPY link /dst/\nCOPY dirlink /dst2\n",
        {"a.txt": "a", "link": "-> a.txt", "d/x": "x", "dirlink": "-> d"},
    ),
    Case(
        "modes",
        "FROM {base}\nCOPY . /app/\n",
        {"x.sh": ("#!/bin/sh\n", 0o755), "ro.txt": ("r", 0o444), "w.txt": ("w", 0o600)},
    ),
    Case("into-sticky-tmp", "FROM {base}\nCOPY a.txt /tmp/\nCOPY src /tmp/src\n", {"a.txt": "a", **SRC}),
    Case("add-local-file", "FROM {base}\nADD a.txt /added/\nADD src /added/src\n", {"a.txt": "a", **SRC}),
    Case("json-form-with-space", 'FROM {base}\nCOPY ["a b.txt", "/dst dir/"]\n', {"a b.txt": "spaced"}),
    Case(
        "escape-directive",
        "# escape=`\nFROM {base}\nENV A=one `\n    B=two\nCOPY a.txt `\n     /app/\nLABEL x=a\\b\n",
        {"a.txt": "a"},
    ),
    Case("empty-file-and-dir", "FROM {base}\nCOPY . /app/\n", {"empty.txt": "", "dir/.keep": ""}),
    Case(
        "parent-stack-image",
        "FROM parent\nCOPY a.txt ./\nLABEL org.example.tier=app\nENV EXTRA=1\n",
        {"a.txt": "a"},
        parent=True,
    ),
    Case(
        "parent-entrypoint-resets-its-cmd",
        'FROM parent\nENTRYPOINT ["sh"]\nUSER 1000\nCOPY a.txt /srv/app/\n',
        {"a.txt": "a"},
        parent=True,
    ),
    Case("parent-copy-into-owned-dir", "FROM parent\nCOPY src ./src/\n", SRC, parent=True),
    # the lookup: paths of the base (and of the stack parent) looked up in a created
    # container, the classic builder reading the image's own layers
    Case(
        "lookup-sticky-tmp-chown-and-nested",
        "FROM {base}\nCOPY --chown=1000:1000 src /tmp\nCOPY --chown=7:7 a.txt /tmp/x/y/\n"
        "WORKDIR /tmp/w/a/b\nCOPY a.txt .\n",
        {"a.txt": "a", **SRC},
    ),
    Case(
        "lookup-bin-beyond-the-listing-budget",
        "FROM {base}\nCOPY a.txt /bin/\nCOPY a.txt /bin/zz-late.txt\nCOPY --chown=5:5 a.txt /bin/\n",
        {"a.txt": "a"},
    ),
    Case(
        "lookup-workdir-nested-new-and-existing",
        "FROM {base}\nUSER 1000\nWORKDIR /opt/a/b\nWORKDIR /bin\nWORKDIR /tmp\nCOPY a.txt ./\n",
        {"a.txt": "a"},
    ),
    Case(
        "lookup-multistage-target-stage",
        "FROM {base} AS one\nCOPY a.txt /tmp/one/\nFROM one AS two\nCOPY --chown=3:3 a.txt /tmp/one/\n"
        "FROM {base}\nCOPY a.txt /tmp/three/\n",
        {"a.txt": "a"},
        target="two",
    ),
    # (the stack parent's history has a WORKDIR layer without content beside steps without layers:
    # it is read from its save, not looked up)
    Case(
        "parent-chown-into-its-workdir-and-owned-dir",
        "FROM parent\nCOPY --chown=2000:2000 a.txt ./\nCOPY a.txt /srv/\nWORKDIR /srv/app/sub\n"
        "COPY --chown=2000:2000 src /srv/app\n",
        {"a.txt": "a", **SRC},
        parent=True,
    ),
    # a layer written from looked-up paths, then a path only the init layer may have made (/etc of
    # the base holds nothing else): the assembly starts again from the base's save
    Case(
        "lookup-falls-back-after-a-layer",
        "FROM {base}\nCOPY --chown=1:1 a.txt /tmp/d/\nCOPY a.txt /etc/\nWORKDIR /etc/w\n"
        "COPY a.txt /tmp/d/b.txt\n",
        {"a.txt": "a"},
    ),
]
