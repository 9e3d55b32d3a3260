"""envkit's .dockerignore rules against Docker's own behaviour (moby/patternmatcher).

The tables below restate, as data, the cases of moby/patternmatcher's tests
(TestMatches with its multi-pattern cases, TestMatch, TestCompile, the small
single-case tests, TestReadAll of ignorefile) and the malformed patterns Docker
refuses; each row is a fact about what Docker does with a pattern and a path.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from envkit.config.find import load
from envkit.config.model import ImageSpec
from envkit.errors import ConfigError
from envkit.images.context import context_entries, ignore_patterns
from envkit.images.ignore import EXACT, PREFIX, REGEXP, SUFFIX, IgnoreRules, read_patterns, translate

# TestMatches: pattern, path, and whether the path matches the pattern itself ("exact"), only
# through one of its parent directories ("parent"), or not at all ("no").
MATCHES = [
    ("**", "file", "exact"),
    ("**", "file/", "exact"),
    ("**/", "file", "exact"),
    ("**/", "file/", "exact"),
    ("**", "/", "exact"),
    ("**/", "/", "exact"),
    ("**", "dir/file", "exact"),
    ("**/", "dir/file", "exact"),
    ("**", "dir/file/", "exact"),
    ("**/", "dir/file/", "exact"),
    ("**/**", "dir/file", "exact"),
    ("**/**", "dir/file/", "exact"),
    ("dir/**", "dir/file", "exact"),
    ("dir/**", "dir/file/", "exact"),
    ("dir/**", "dir/dir2/file", "exact"),
    ("dir/**", "dir/dir2/file/", "exact"),
    ("**/dir", "dir", "exact"),
    ("**/dir", "dir/file", "parent"),
    ("**/dir2/*", "dir/dir2/file", "exact"),
    ("**/dir2/*", "dir/dir2/file/", "parent"),
    ("**/dir2/**", "dir/dir2/dir3/file", "exact"),
    ("**/dir2/**", "dir/dir2/dir3/file/", "exact"),
    ("**file", "file", "exact"),
    ("**file", "dir/file", "exact"),
    ("**/file", "dir/file", "exact"),
    ("**file", "dir/dir/file", "exact"),
    ("**/file", "dir/dir/file", "exact"),
    ("**/file*", "dir/dir/file", "exact"),
    ("**/file*", "dir/dir/file.txt", "exact"),
    ("**/file*txt", "dir/dir/file.txt", "exact"),
    ("**/file*.txt", "dir/dir/file.txt", "exact"),
    ("**/file*.txt*", "dir/dir/file.txt", "exact"),
    ("**/**/*.txt", "dir/dir/file.txt", "exact"),
    ("**/**/*.txt2", "dir/dir/file.txt", "no"),
    ("**/*.txt", "file.txt", "exact"),
    ("**/**/*.txt", "file.txt", "exact"),
    ("a**/*.txt", "a/file.txt", "exact"),
    ("a**/*.txt", "a/dir/file.txt", "exact"),
    ("a**/*.txt", "a/dir/dir/file.txt", "exact"),
    ("a/*.txt", "a/dir/file.txt", "no"),
    ("a/*.txt", "a/file.txt", "exact"),
    ("a/*.txt**", "a/file.txt", "exact"),
    ("a[b-d]e", "ae", "no"),
    ("a[b-d]e", "ace", "exact"),
    ("a[b-d]e", "aae", "no"),
    ("a[^b-d]e", "aze", "exact"),
    (".*", ".foo", "exact"),
    (".*", "foo", "no"),
    ("abc.def", "abcdef", "no"),
    ("abc.def", "abc.def", "exact"),
    ("abc.def", "abcZdef", "no"),
    ("abc?def", "abcZdef", "exact"),
    ("abc?def", "abcdef", "no"),
    ("**/foo/bar", "foo/bar", "exact"),
    ("**/foo/bar", "dir/foo/bar", "exact"),
    ("**/foo/bar", "dir/dir2/foo/bar", "exact"),
    ("abc/**", "abc", "no"),
    ("abc/**", "abc/def", "exact"),
    ("abc/**", "abc/def/ghi", "exact"),
    ("**/.foo", ".foo", "exact"),
    ("**/.foo", "bar.foo", "no"),
    ("a(b)c/def", "a(b)c/def", "exact"),
    ("a(b)c/def", "a(b)c/xyz", "no"),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", "exact"),
    (
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        "exact",
    ),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", "exact"),
    # the cases for a platform whose separator is "/" (on Windows "\" separates directories)
    ("a\\\\", "a\\", "exact"),
    ("a\\*b", "a*b", "exact"),
]

# TestMatches' multi-pattern cases: patterns, path, left out.
MULTI = [
    (["**", "!util/docker/web"], "util/docker/web/foo", False),
    (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", True),
    (
        ["**", "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"],
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        False,
    ),
    (["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", False),
]

# The small single-case tests: TestWildcardMatches, TestPatternMatches, the exclusion and
# folder tests, TestExclusionPatternMatchesWholeDirectory, TestMatchesWithNoPatterns.
SINGLE = [
    (["*"], "fileutils.go", True),
    (["*.go"], "fileutils.go", True),
    (["!fileutils.go", "*.go"], "fileutils.go", True),
    (["docs", "!docs/README.md"], "docs/README.md", False),
    (["docs/", "!docs/README.md"], "docs/README.md", False),
    (["docs/*", "!docs/README.md"], "docs/README.md", False),
    (["*.go", "!fileutils.go"], "fileutils.go", False),
    (["*.go"], ".", False),
    ([], "/any/path/there", False),
    # TestCleanPatterns*: an empty pattern is dropped, and spaces around an exception are trimmed
    (["docs", "config", ""], "config/x", True),
    (["docs", "  !docs/README.md"], "docs/README.md", False),
    (["docs", "!docs/README.md  "], "docs/README.md", False),
]

# TestMatch (the cases Go's filepath.Match is tested with): pattern, path, left out.
GLOB = [
    ("abc", "abc", True),
    ("*", "abc", True),
    ("*c", "abc", True),
    ("a*", "a", True),
    ("a*", "abc", True),
    ("a*", "ab/c", True),
    ("a*/b", "abc/b", True),
    ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True),
    ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[c]", "abc", True),
    ("ab[b-d]", "abc", True),
    ("ab[e-g]", "abc", False),
    ("ab[^c]", "abc", False),
    ("ab[^b-d]", "abc", False),
    ("ab[^e-g]", "abc", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "ab", False),
    ("a?b", "a☺b", True),
    ("a[^a]b", "a☺b", True),
    ("a???b", "a☺b", False),
    ("a[^a][^a][^a]b", "a☺b", False),
    ("[a-ζ]*", "\u03b1", True),  # a Greek alpha
    ("*[a-ζ]", "A", False),
    ("a?b", "a/b", False),
    ("a*b", "a/b", False),
    ("[\\]a]", "]", True),
    ("[\\-]", "-", True),
    ("[x\\-]", "x", True),
    ("[x\\-]", "-", True),
    ("[x\\-]", "z", False),
    ("[\\-x]", "x", True),
    ("[\\-x]", "-", True),
    ("[\\-x]", "a", False),
    ("*x", "xxx", True),
]

# Patterns Docker refuses (TestMatch's bad patterns, TestMatchesWithMalformedPatterns,
# TestSingleExclamationError, and the regression test for "[Local-Only]/"), with a word of
# the reason envkit gives.
MALFORMED = [
    ("[]a]", "empty or starts with"),
    ("[-]", '"-"'),
    ("[x-]", '"-"'),
    ("[-x]", '"-"'),
    ("\\", "escapes nothing"),
    ("[a-b-c]", '"-"'),
    ("[", "never closed"),
    ("[^", "never closed"),
    ("[^bc", "never closed"),
    ("a[", "never closed"),
    ("!", 'a "!" with nothing after it'),
    ("[Local-Only]/", "invalid character class range"),
    # Docker refuses these too: the check runs past a "*", an exception is checked the same,
    # and Go's regular expressions refuse the rest when Docker first matches a path
    ("*.log\\", "escapes nothing"),
    ("**/[", "never closed"),
    ("!docs/[", "never closed"),
    ("!/", 'a "!" with nothing after it'),
    ("[z-a]", "invalid character class range"),
    ("C:\\Users\\me", '"\\U"'),
    ("a\\1", '"\\1"'),
    ("[[:alpha:]", "missing closing ]"),
    ("[[:nope:]]", "invalid character class range"),
    ("x\\pq", "invalid character class range"),
    ("?{1001}", "invalid repeat count"),
    ("?{2}{3}", "invalid nested repetition operator"),
]

# TestCompile: the kind of match Docker picks for a pattern, and the regular expression it
# builds when it needs one.
COMPILE = [
    ("*", REGEXP, "^[^/]*$"),
    ("file*", REGEXP, "^file[^/]*$"),
    ("*file", REGEXP, "^[^/]*file$"),
    ("a*/b", REGEXP, "^a[^/]*/b$"),
    ("**", SUFFIX, ""),
    ("**/**", REGEXP, "^(.*/)?.*$"),
    ("dir/**", PREFIX, ""),
    ("**/dir", SUFFIX, ""),
    ("**/dir2/*", REGEXP, "^(.*/)?dir2/[^/]*$"),
    ("**/dir2/**", REGEXP, "^(.*/)?dir2/.*$"),
    ("**file", SUFFIX, ""),
    ("**/file*txt", REGEXP, "^(.*/)?file[^/]*txt$"),
    ("**/**/*.txt", REGEXP, "^(.*/)?(.*/)?[^/]*\\.txt$"),
    ("a[b-d]e", REGEXP, "^a[b-d]e$"),
    (".*", REGEXP, "^\\.[^/]*$"),
    ("abc.def", EXACT, ""),
    ("abc?def", REGEXP, "^abc[^/]def$"),
    ("**/foo/bar", SUFFIX, ""),
    ("a(b)c/def", EXACT, ""),
    ("a.|)$(}+{bc", EXACT, ""),
    ("dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", EXACT, ""),
]

# ignorefile's TestReadAll: the text of an ignore file, and the patterns Docker reads from it.
READ_ALL_TEXT = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! "
READ_ALL = ["test1", "test2", "a/file/here", "lastfile", "!inverted/abs/path", "!", "!"]


@pytest.mark.parametrize(("pattern", "path", "how"), MATCHES)
def test_matches(pattern: str, path: str, how: str) -> None:
    rules = IgnoreRules([pattern])
    assert rules.excludes(path) is (how != "no")
    assert rules.matches_exactly(path) is (how == "exact")


@pytest.mark.parametrize(("patterns", "path", "excluded"), MULTI + SINGLE)
def test_patterns_in_order(patterns: list[str], path: str, excluded: bool) -> None:
    assert IgnoreRules(patterns).excludes(path) is excluded


@pytest.mark.parametrize(("pattern", "path", "excluded"), GLOB)
def test_glob_cases(pattern: str, path: str, excluded: bool) -> None:
    assert IgnoreRules([pattern]).excludes(path) is excluded


@pytest.mark.parametrize(("pattern", "kind", "regexp"), COMPILE)
def test_compiled_form(pattern: str, kind: str, regexp: str) -> None:
    got_kind, got_regexp = translate(pattern)
    assert got_kind == kind
    if kind == REGEXP:
        assert got_regexp == regexp


def test_read_all() -> None:
    assert [pattern for _, pattern in read_patterns(READ_ALL_TEXT)] == READ_ALL


@pytest.mark.parametrize(("pattern", "why"), MALFORMED)
def test_a_malformed_pattern_is_a_config_error_naming_file_and_line(
    tmp_path: Path, pattern: str, why: str
) -> None:
    ignore = tmp_path / "p/images/app/.dockerignore"
    ignore.parent.mkdir(parents=True)
    ignore.write_text(f"# build droppings\n*.pyc\n{pattern}\nnode_modules\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        ignore_patterns(_spec(tmp_path / "p"))
    error = caught.value
    assert error.file == ignore
    assert error.key == "line 3"
    [(_, as_read)] = read_patterns(pattern)  # the pattern as Docker reads it ("a/" is "a")
    assert f'"{as_read}"' in error.problem
    assert why in error.problem and "Docker rejects it" in error.problem
    assert error.fix
    # the rules themselves refuse it too, naming the line they are told
    with pytest.raises(ConfigError, match="line 7"):
        IgnoreRules(["*.pyc", pattern], "x/.dockerignore", [2, 7])


def _spec(root: Path) -> ImageSpec:
    root.mkdir(parents=True, exist_ok=True)
    (root / "envkit.toml").write_text('[stack]\nname = "d"\n[images.app]\n')
    (root / "images/app").mkdir(parents=True, exist_ok=True)
    (root / "images/app/Dockerfile").write_text("FROM x\n")
    return load(root, environ={}).images["app"]


# Where Docker and docker-py (whose matcher envkit used before) disagree, some with a companion
# case they agree on: patterns, path, and whether Docker leaves the path out.
DOCKER_NOT_DOCKER_PY = [
    (["*.MD"], "README.md", False),  # Docker is case-sensitive; docker-py lowercases both
    (["readme.md"], "README.md", False),
    (["**.log"], "logs/app.log", True),  # "**x" is "ends with x" in Docker
    (["**foo/bar"], "xfoo/bar", True),
    (["[!a]x"], "bx", False),  # "!" is a member of the class, not its negation
    (["[!a]x"], "!x", True),
    (["[^a]x"], "bx", True),  # "^" negates the class
    (["[^a]x"], "ax", False),
    (["\\*.txt"], "*.txt", True),  # "\" escapes
    (["\\*.txt"], "a.txt", False),
    (["../secret"], "secret", False),  # a leading ".." stays: it matches nothing
    (["a|b*"], "abc", True),  # "|" is not escaped: an alternation of "^a" and "b[^/]*$"
    (["a|b*"], "x/bz", True),
    (["?{2}"], "ab", True),  # "{2}" is not escaped: a counted repetition
    (["?{2}"], "abc", False),
    (["x\\d"], "x1", True),  # "\d" is Go's digit class
    (["x\\d"], "xd", False),
    (["foo\\bar"], "foobar", False),  # "\b" is a word boundary: this matches nothing
    (["[[:digit:]]*"], "1abc", True),
    (["a\\Q*"], "a[^/]*$", True),  # "\Q" quotes the rest of the regular expression
    (["a\\Q*"], "ab", False),
    (["**/cache", "!a/b/cache/keep"], "a/b/cache/junk", True),  # every parent directory counts
    # the last pattern that matches a parent wins (MatchesOrParentMatches; BuildKit's walk, which
    # carries each pattern's result down from the parent instead, lets this one through)
    (["a", "!a/b", "a"], "a/b", True),
]


@pytest.mark.parametrize(("patterns", "path", "excluded"), DOCKER_NOT_DOCKER_PY)
def test_where_docker_and_docker_py_differ(patterns: list[str], path: str, excluded: bool) -> None:
    assert IgnoreRules(patterns).excludes(path) is excluded


def test_read_like_docker() -> None:
    text = "\ufeff*.log\r\n #not a comment\r\n# a comment\n\t!  /keep.log \nback\\slash/\na\rb\n\x1cx\n/\n"
    assert read_patterns(text) == [
        (1, "*.log"),  # the byte-order mark and the "\r" before "\n" go
        (2, "#not a comment"),  # only a "#" in the first column starts a comment
        (4, "!keep.log"),  # trimmed, after the "!" too, and the leading "/" goes
        (5, "back\\slash"),  # cleaned like a path: the trailing "/" goes
        (6, "a\rb"),  # a lone "\r" does not end a line
        (7, "\x1cx"),  # Go does not count \x1c as a space
        (8, "/"),
    ]


def test_a_line_docker_cannot_read_is_a_config_error() -> None:
    long = "a" * (64 * 1024)
    assert read_patterns("x\n" + long[:-1] + "\n")[1] == (2, long[:-1])
    with pytest.raises(ConfigError, match="token too long") as caught:
        read_patterns("x\n" + long + "\n", "ctx/.dockerignore")
    assert caught.value.key == "line 2" and caught.value.file == Path("ctx/.dockerignore")


def test_ignore_patterns_returns_them_as_docker_reads_them(tmp_path: Path) -> None:
    spec = _spec(tmp_path / "p")
    (spec.context / ".dockerignore").write_bytes(b"\xef\xbb\xbf/top.txt\r\ndocs/\n# c\n!./docs/README.md\n")
    assert ignore_patterns(spec) == ["top.txt", "docs", "!docs/README.md"]


@pytest.mark.parametrize(
    ("patterns", "directory", "may"),
    [
        (["node_modules", "!*.md"], "node_modules", False),  # "*" never crosses "/"
        (["node_modules", "!**/*.md"], "node_modules", True),
        (["build", "!build/keep/**"], "build", True),
        (["build", "!build/keep/**"], "build/other", False),
        (["build", "!build/keep"], "build", True),
        (["build", "!**/keep.txt"], "build", True),
        (["a", "!b"], "a", False),
        (["a", "!a/[xy]z"], "a", True),
        (["a", "!b/[xy]z"], "a", False),
        (["a", "!b|y*"], "a", True),  # "|": the alternative "y[^/]*$" may end any path
        (["a", "!b|y"], "a", False),  # without a wildcard, "|" is only a character
    ],
)
def test_may_include_below(patterns: list[str], directory: str, may: bool) -> None:
    rules = IgnoreRules(patterns)
    assert rules.excludes(directory)
    assert rules.may_include_below(directory) is may


def test_pruning_never_hides_what_would_be_let_through() -> None:
    """Where may_include_below says no, nothing below the directory is let through."""
    rng = random.Random(20240611)
    atoms = ["a", "b", "/", "*", "**", "?", "[ab]", "[^a]", "!", "x", "|", "{1,2}", "\\b", "\\d", "1"]
    names = ["a", "b", "ab", "x", "1", "a1", "ba"]
    pruned = 0
    for _ in range(3000):
        patterns = ["".join(rng.choice(atoms) for _ in range(rng.randint(1, 5))) for _ in range(3)]
        try:
            rules = IgnoreRules(patterns)
        except ConfigError:
            continue
        directory = "/".join(rng.choice(names) for _ in range(rng.randint(1, 2)))
        if not rules.excludes(directory) or rules.may_include_below(directory):
            continue
        pruned += 1
        for _ in range(10):
            below = "/".join([directory] + [rng.choice(names) for _ in range(rng.randint(1, 3))])
            assert rules.excludes(below), (patterns, directory, below)
    assert pruned > 300


def test_the_walk_descends_where_an_exception_may_bring_something_back(tmp_path: Path) -> None:
    spec = _spec(tmp_path / "p")
    for relative in ["build/keep.txt", "build/deep/keep.txt", "build/out.o", "node_modules/m/README.md"]:
        (spec.context / relative).parent.mkdir(parents=True, exist_ok=True)
        (spec.context / relative).write_text(relative)
    (spec.context / ".dockerignore").write_text("build\n!**/keep.txt\nnode_modules\n!*.md\n")
    paths = [path for path, _ in context_entries(spec)]
    assert paths == ["Dockerfile", "build/deep/keep.txt", "build/keep.txt"]
