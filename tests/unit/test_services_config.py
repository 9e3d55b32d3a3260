"""The stack file's ``[services]`` table: defaults, health checks, order, and one clear error per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from envkit import graph
from envkit.config.find import load
from envkit.config.model import DEFAULT_START_TIMEOUT, HealthCheck, StackConfig
from envkit.errors import ConfigError

HEAD = '[stack]\nname = "demo"\n[images.app]\n'


def make(root: Path, services: str) -> Path:
    """A project with one stack image (``app``) and the given ``[services...]`` TOML."""
    (root / "envkit.toml").write_text(HEAD + services)
    dockerfile = root / "images/app/Dockerfile"
    dockerfile.parent.mkdir(parents=True, exist_ok=True)
    dockerfile.write_text("FROM scratch\nCOPY . /\n")
    return root


def load_services(root: Path, services: str) -> StackConfig:
    return load(make(root, services), environ={})


def test_service_defaults(tmp_path: Path) -> None:
    config = load_services(tmp_path, '[services.cache]\nimage = "redis:7-alpine"\n')
    cache = config.services["cache"]
    assert cache.name == "cache"
    assert cache.image == "redis:7-alpine"
    assert cache.ports == ()
    assert cache.environment == {}
    assert cache.command is None
    assert cache.depends_on == ()
    assert cache.healthcheck == HealthCheck("image")
    assert cache.healthcheck.kind == "image"
    assert cache.start_timeout == DEFAULT_START_TIMEOUT == 60.0
    assert isinstance(cache.start_timeout, float)


def test_no_services_table_means_no_services(tmp_path: Path) -> None:
    (tmp_path / "envkit.toml").write_text('[stack]\nname = "demo"\n')
    config = load(tmp_path, environ={})
    assert dict(config.services) == {}
    assert config.service_order() == []


def test_full_service_entry(tmp_path: Path) -> None:
    config = load_services(
        tmp_path,
        "[services.api]\n"
        'image = "app"\n'
        "ports = [8000, 9000, 8000]\n"
        'environment = { MODE = "test", WORKERS = 2, RATIO = 0.5, DEBUG = true, QUIET = false }\n'
        'command = ["serve", "--port", "8000"]\n'
        'depends_on = ["db", "db"]\n'
        "start_timeout = 5\n"
        "[services.db]\n"
        'image = "postgres:16"\n',
    )
    api = config.services["api"]
    assert api.image == "app"  # the stack's own image
    assert api.ports == (8000, 9000)  # duplicates dropped, order kept
    assert api.environment == {
        "MODE": "test",
        "WORKERS": "2",
        "RATIO": "0.5",
        "DEBUG": "true",
        "QUIET": "false",
    }
    assert api.command == ("serve", "--port", "8000")
    assert api.depends_on == ("db",)
    assert api.start_timeout == 5.0 and isinstance(api.start_timeout, float)


@pytest.mark.parametrize(
    ("healthcheck", "ports", "expected"),
    [
        ('{ cmd = ["redis-cli", "ping"] }', "[]", HealthCheck("cmd", cmd=("redis-cli", "ping"))),
        ('{ http = "/health", port = 8000 }', "[8000]", HealthCheck("http", path="/health", port=8000)),
        ('{ http = "/", port = 9000 }', "[8000, 9000]", HealthCheck("http", path="/", port=9000)),
        ("{ tcp = 6379 }", "[6379]", HealthCheck("tcp", port=6379)),
    ],
    ids=["cmd", "http", "http-root-second-port", "tcp"],
)
def test_each_form_of_healthcheck(
    tmp_path: Path, healthcheck: str, ports: str, expected: HealthCheck
) -> None:
    config = load_services(
        tmp_path, f'[services.svc]\nimage = "redis"\nports = {ports}\nhealthcheck = {healthcheck}\n'
    )
    check = config.services["svc"].healthcheck
    assert check == expected
    assert check.describe()  # every form describes itself for ServiceUnhealthy


def test_healthcheck_descriptions_name_the_check() -> None:
    assert "redis-cli" in HealthCheck("cmd", cmd=("redis-cli", "ping")).describe()
    assert HealthCheck("http", path="/up", port=80).describe() == "HTTP GET /up on port 80"
    assert HealthCheck("tcp", port=5432).describe() == "TCP port 5432"
    assert "HEALTHCHECK" in HealthCheck("image").describe()


def test_services_in_pyproject_are_named_with_its_prefix(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.envkit.stack]\nname = "py"\n[tool.envkit.services.db]\nimage = "postgres:16"\nports = [0]\n'
    )
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={})
    assert caught.value.key == "tool.envkit.services.db.ports"


# (the [services...] TOML, the key the error must name, words the problem must contain)
BAD = [
    ('[services.db]\nimage = "redis"\nimagee = "x"\n', "services.db.imagee", "unknown key"),
    ("[services]\ndb = 3\n", "services.db", "must be a table"),
    ('[services.Db]\nimage = "redis"\n', "services.Db", "not a valid Docker name"),
    ("[services.db]\nports = [1]\n", "services.db.image", "missing"),
    ("[services.db]\nimage = 5\n", "services.db.image", "not a string"),
    ('[services.db]\nimage = ""\n', "services.db.image", "missing"),
    (
        '[services.db]\nimage = "Not An/Image!"\n',
        "services.db.image",
        "neither an image of this stack (app) nor a valid image reference",
    ),
    ('[services.db]\nimage = "redis"\nports = 6379\n', "services.db.ports", "must be a list"),
    ('[services.db]\nimage = "redis"\nports = ["6379"]\n', "services.db.ports", "1-65535"),
    ('[services.db]\nimage = "redis"\nports = [0]\n', "services.db.ports", "1-65535"),
    ('[services.db]\nimage = "redis"\nports = [65536]\n', "services.db.ports", "1-65535"),
    ('[services.db]\nimage = "redis"\nports = [true]\n', "services.db.ports", "1-65535"),
    ('[services.db]\nimage = "redis"\nenvironment = ["A=1"]\n', "services.db.environment", "must be a table"),
    (
        '[services.db]\nimage = "redis"\nenvironment = { A = { B = 1 } }\n',
        "services.db.environment.A",
        "string or number",
    ),
    (
        '[services.db]\nimage = "redis"\nenvironment = { A = [1] }\n',
        "services.db.environment.A",
        "string or number",
    ),
    ('[services.db]\nimage = "redis"\ncommand = []\n', "services.db.command", "non-empty list of strings"),
    (
        '[services.db]\nimage = "redis"\ncommand = ["redis-server", 1]\n',
        "services.db.command",
        "non-empty list of strings",
    ),
    (
        '[services.db]\nimage = "redis"\ncommand = "redis-server"\n',
        "services.db.command",
        "non-empty list of strings",
    ),
    (
        '[services.db]\nimage = "redis"\ndepends_on = "cache"\n',
        "services.db.depends_on",
        "list of service names",
    ),
    (
        '[services.db]\nimage = "redis"\ndepends_on = ["cache"]\n',
        "services.db.depends_on",
        "'cache' is not a service of this stack (db)",
    ),
    (
        '[services.a]\nimage = "redis"\ndepends_on = ["b"]\n'
        '[services.b]\nimage = "redis"\ndepends_on = ["c"]\n'
        '[services.c]\nimage = "redis"\ndepends_on = ["a"]\n',
        "services.a.depends_on",
        "cycle: a -> b -> c -> a",
    ),
    (
        '[services.a]\nimage = "redis"\ndepends_on = ["a"]\n',
        "services.a.depends_on",
        "cycle: a -> a",
    ),
    (
        '[services.db-main]\nimage = "redis"\n[services.db_main]\nimage = "redis"\n',
        "services.db_main",
        "same environment names (ENVKIT_DB_MAIN_...)",
    ),
    (
        '[services.db]\nimage = "redis"\nports = [80]\nhealthcheck = { cmd = ["true"], tcp = 80 }\n',
        "services.db.healthcheck",
        "exactly one of cmd, http or tcp",
    ),
    (
        '[services.db]\nimage = "redis"\nhealthcheck = {}\n',
        "services.db.healthcheck",
        "exactly one of cmd, http or tcp",
    ),
    (
        '[services.db]\nimage = "redis"\nhealthcheck = "redis-cli ping"\n',
        "services.db.healthcheck",
        "must be a table",
    ),
    (
        '[services.db]\nimage = "redis"\nhealthcheck = { cmd = ["true"], interval = 5 }\n',
        "services.db.healthcheck.interval",
        "unknown key",
    ),
    (
        '[services.db]\nimage = "redis"\nports = [80]\nhealthcheck = { tcp = 80, port = 80 }\n',
        "services.db.healthcheck.port",
        "unknown key",
    ),
    (
        '[services.db]\nimage = "redis"\nhealthcheck = { cmd = [] }\n',
        "services.db.healthcheck.cmd",
        "non-empty list of strings",
    ),
    (
        '[services.db]\nimage = "redis"\nports = [80]\nhealthcheck = { http = "health", port = 80 }\n',
        "services.db.healthcheck.http",
        "starting with '/'",
    ),
    (
        '[services.db]\nimage = "redis"\nports = [80]\nhealthcheck = { http = "/health" }\n',
        "services.db.healthcheck.port",
        "must be a container port",
    ),
    (
        '[services.db]\nimage = "redis"\nports = [80]\nhealthcheck = { http = "/health", port = 8080 }\n',
        "services.db.healthcheck.port",
        "port 8080 is not published",
    ),
    (
        '[services.db]\nimage = "redis"\nports = [80]\nhealthcheck = { tcp = 6379 }\n',
        "services.db.healthcheck.tcp",
        "port 6379 is not published",
    ),
    (
        '[services.db]\nimage = "redis"\nports = [1]\nhealthcheck = { tcp = true }\n',
        "services.db.healthcheck.tcp",
        "must be a container port",
    ),
    ('[services.db]\nimage = "redis"\nstart_timeout = 0\n', "services.db.start_timeout", "positive"),
    ('[services.db]\nimage = "redis"\nstart_timeout = -5\n', "services.db.start_timeout", "positive"),
    ('[services.db]\nimage = "redis"\nstart_timeout = true\n', "services.db.start_timeout", "positive"),
    ('[services.db]\nimage = "redis"\nstart_timeout = "60"\n', "services.db.start_timeout", "positive"),
]


@pytest.mark.parametrize(("services", "key", "words"), BAD, ids=[f"{b[1]}|{b[2]}" for b in BAD])
def test_bad_service_gives_one_clear_error(tmp_path: Path, services: str, key: str, words: str) -> None:
    make(tmp_path, services)
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={})
    err = caught.value
    message = str(err)
    assert err.key == key
    assert words in err.problem
    assert f"{tmp_path / 'envkit.toml'}: {key}: " in message  # names the file and the key
    assert "fix: " in message and err.fix  # and the fix


@pytest.mark.parametrize(
    ("services", "fix_words"),
    [
        ('[services.db]\nimage = "redis"\nimagee = "x"\n', "image"),  # lists the allowed keys
        ('[services.db]\nimage = "redis"\nports = [80]\nhealthcheck = { tcp = 81 }\n', "add 81"),
        ('[services.db]\nimage = "redis"\ndepends_on = ["x"]\n', "[services]"),
    ],
)
def test_fixes_say_what_to_do(tmp_path: Path, services: str, fix_words: str) -> None:
    make(tmp_path, services)
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={})
    assert fix_words in caught.value.fix


CHAIN = (
    '[services.web]\nimage = "app"\ndepends_on = ["api"]\n'
    '[services.api]\nimage = "app"\ndepends_on = ["db", "cache"]\n'
    '[services.worker]\nimage = "app"\ndepends_on = ["cache"]\n'
    '[services.db]\nimage = "postgres:16"\n'
    '[services.cache]\nimage = "redis"\n'
    '[services.mail]\nimage = "mailhog/mailhog"\n'
)


def before(order: list[str], first: str, second: str) -> bool:
    return order.index(first) < order.index(second)


def test_service_order_puts_dependencies_first(tmp_path: Path) -> None:
    config = load_services(tmp_path, CHAIN)
    order = config.service_order()
    assert sorted(order) == sorted(config.services)  # every service, once
    assert len(order) == len(set(order))
    for name, spec in config.services.items():
        for dep in spec.depends_on:
            assert before(order, dep, name), (dep, name, order)


def test_service_order_of_a_subset_takes_the_depends_on_closure(tmp_path: Path) -> None:
    config = load_services(tmp_path, CHAIN)
    order = config.service_order(["web"])
    assert sorted(order) == ["api", "cache", "db", "web"]  # not worker, not mail
    assert order[-1] == "web"
    assert before(order, "db", "api") and before(order, "cache", "api") and before(order, "api", "web")

    assert config.service_order(["worker", "mail"]) == ["cache", "worker", "mail"]
    assert config.service_order(["db"]) == ["db"]
    # a dependency asked for after its dependent is not repeated
    assert config.service_order(["worker", "cache"]) == ["cache", "worker"]


def test_layers_start_independent_services_together(tmp_path: Path) -> None:
    config = load_services(tmp_path, CHAIN)
    deps = config.service_graph()
    layers = graph.layers(deps, config.service_order())
    assert [sorted(layer) for layer in layers] == [["cache", "db", "mail"], ["api", "worker"], ["web"]]
    assert graph.layers(deps, config.service_order(["worker"])) == [["cache"], ["worker"]]
    assert graph.layers(deps, []) == []
