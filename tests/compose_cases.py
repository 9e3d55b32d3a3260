"""Compose projects written for the tests, each with the stack envkit must read from it.

Each :class:`Case` is a folder of files (compose files, .env, env files, Dockerfiles,
secrets) and the resolution written down by hand: what ``envkit config --json`` must say,
service by service, as compose means the file. Together they cover every row of the
compose subset envkit reads (issue 10). ``v1`` marks the files Debian's docker-compose v1
also understands, so the integration tier can ask it for a second opinion.

``{root}`` in an expected string is the project's folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVICE_DEFAULTS: dict[str, Any] = {
    "built": False,
    "ports": [],
    "environment": {},
    "command": None,
    "entrypoint": None,
    "depends_on": {},
    "healthcheck": {"kind": "image"},
    "start_timeout": 60.0,
    "oneshot": False,
    "volumes": [],
    "aliases": [],
    "user": None,
    "working_dir": None,
    "labels": {},
    "stop_signal": None,
    "tty": False,
    "stdin_open": False,
    "pull_policy": None,
}
IMAGE_DEFAULTS: dict[str, Any] = {
    "recipe": None,
    "args": {},
    "target": None,
    "platform": None,
    "tags": [],
    "parents": [],
}


@dataclass
class Case:
    name: str
    files: dict[str, str]
    stack: str
    services: dict[str, dict[str, Any]]
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    volumes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    v1: bool = False  # docker-compose v1 understands the file
    dirs: list[str] = field(default_factory=list)  # empty folders to make

    def write(self, root: Path) -> None:
        for relative, text in self.files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        for relative in self.dirs:
            (root / relative).mkdir(parents=True, exist_ok=True)

    def expected(self, root: Path) -> dict[str, Any]:
        """The parts of ``envkit config --json`` this case fixes, with every default filled in."""

        def fill(value: Any) -> Any:
            if isinstance(value, str):
                return value.replace("{root}", str(root))
            if isinstance(value, list):
                return [fill(v) for v in value]
            if isinstance(value, dict):
                return {k: fill(v) for k, v in value.items()}
            return value

        return fill(
            {
                "stack": self.stack,
                "services": {n: {**SERVICE_DEFAULTS, **s} for n, s in self.services.items()},
                "images": {n: {**IMAGE_DEFAULTS, **i} for n, i in self.images.items()},
                "volumes": self.volumes,
                "notes": self.notes,
            }
        )


def ext(image: str, **more: Any) -> dict[str, Any]:
    return {"image": image, **more}


def cmd(*words: str) -> dict[str, Any]:
    return {"kind": "cmd", "cmd": list(words)}


def published(service: str, shown: str, port: int) -> str:
    return (
        f"services.{service}.ports: {shown} is published on 127.0.0.1 at a port the engine picks "
        f"(reach it with endpoint({service!r}, {port}))"
    )


PORTS = Case(
    "ports",
    {
        "compose.yaml": """\
name: shop
services:
  web:
    image: nginx:1.27
    container_name: shop-web
    restart: unless-stopped
    expose: ["3000"]
    ports:
      - "8080:80"
      - "127.0.0.1:8443:443"
      - 9000
      - "9100-9101"
      - "[::1]:5353:53/udp"
      - 22:22
      - target: 7000
        published: "17000"
        protocol: tcp
"""
    },
    stack="shop",
    services={"web": ext("nginx:1.27", ports=[80, 443, 9000, 9100, 9101, 22, 7000])},
    notes=[
        published("web", "8080:80", 80),
        published("web", "127.0.0.1:8443:443", 443),
        "services.web.ports: [::1]:5353:53/udp is not published: envkit publishes TCP ports",
        published("web", "22:22", 22),
        published("web", "17000:7000", 7000),
        "container_name ignored (web): containers are named <stack id>-<service>, so several "
        "stacks run side by side",
        "restart ignored (web): a service that stops is replaced when the stack is next acquired",
    ],
    v1=True,
)

BUILD = Case(
    "build",
    {
        # kept in docker/, building from the folder above it
        "docker/compose.yaml": """\
services:
  api:
    build:
      context: ..
      dockerfile: docker/api.Dockerfile
      args:
        PYTHON: "3.12"
        RELEASE: ${RELEASE:-dev}
      target: runtime
    image: registry.example/team/api:${TAG:-latest}
  worker:
    image: registry.example/team/api:latest
    command: celery worker
  web:
    build: ../web
  cache:
    image: redis:7
    pull_policy: always
  tool:
    image: busybox:1.36
    pull_policy: if_not_present
""",
        "docker/api.Dockerfile": "FROM python:3.12-slim AS runtime\nCOPY app.py /app/\n",
        "app.py": "print('hi')\n",
        "web/Dockerfile": "FROM nginx:1.27\nCOPY index.html /usr/share/nginx/html/\n",
        "web/index.html": "<p>hi</p>\n",
    },
    stack="docker",  # compose names a project after its first file's folder
    env={"COMPOSE_FILE": "docker/compose.yaml"},
    images={
        "api": {
            "context": "{root}",
            "dockerfile": "{root}/docker/api.Dockerfile",
            "args": {"PYTHON": "3.12", "RELEASE": "dev"},
            "target": "runtime",
            "tags": ["registry.example/team/api:latest"],
        },
        "web": {"context": "{root}/web", "dockerfile": "{root}/web/Dockerfile"},
    },
    services={
        "api": ext("api", built=True),
        "worker": ext("api", built=True, command=["celery", "worker"]),  # the image api tags so
        "web": ext("web", built=True),
        "cache": ext("redis:7", pull_policy="always"),
        "tool": ext("busybox:1.36", pull_policy="missing"),
    },
    v1=True,
)

ENVIRONMENT = Case(
    "environment",
    {
        ".env": 'DB_HOST=db\nGREETING="hello world"\nOVERRIDDEN=dotenv\n',
        "compose.yaml": """\
services:
  app:
    image: python:3.12
    env_file:
      - app.env
      - path: optional.env
        required: false
    environment:
      - DATABASE_URL=postgres://${DB_HOST}:5432/app
      - PASSED_THROUGH
      - NOT_SET_ANYWHERE
      - OVERRIDDEN=${OVERRIDDEN}
      - EMPTY=
  other:
    image: python:3.12
    env_file: other.env
    environment:
      RETRIES: 3
      RATIO: 0.50
      DEBUG: true
      NOTHING:
      GREETING: ${GREETING}
      DEFAULTED: ${UNSET_VAR:-fallback}
      DASH: ${EMPTY_VAR-not-used}
      COLON_DASH: ${EMPTY_VAR:-used}
      PLUS: ${DB_HOST:+has-host}
      NESTED: ${UNSET_VAR:-${DB_HOST:-x}}
      DOLLARS: $$HOME and $$
      BARE: $DB_HOST-$UNSET_TOO
""",
        "app.env": (
            "# comment\n"
            "export FROM_FILE=1\n"
            "QUOTED='single $DB_HOST'\n"
            'DQ="double ${DB_HOST}\\tx"\n'
            "INLINE=value # comment\n"
            "OVERRIDDEN=file\n"
        ),
        "other.env": "A=1\n",
    },
    stack="environment",
    env={"PASSED_THROUGH": "from-process", "OVERRIDDEN": "process", "EMPTY_VAR": ""},
    services={
        "app": ext(
            "python:3.12",
            environment={
                "FROM_FILE": "1",
                "QUOTED": "single $DB_HOST",
                "DQ": "double db\tx",
                "INLINE": "value",
                "OVERRIDDEN": "process",  # environment wins over env_file; the process over .env
                "DATABASE_URL": "postgres://db:5432/app",
                "PASSED_THROUGH": "from-process",
                "EMPTY": "",
            },
        ),
        "other": ext(
            "python:3.12",
            environment={
                "A": "1",
                "RETRIES": "3",
                "RATIO": "0.5",
                "DEBUG": "true",
                "GREETING": "hello world",
                "DEFAULTED": "fallback",
                "DASH": "",
                "COLON_DASH": "used",
                "PLUS": "has-host",
                "NESTED": "db",
                "DOLLARS": "$HOME and $",
                "BARE": "db-",
            },
        ),
    },
    notes=["the variable UNSET_TOO is not set: an empty string is used (as compose does)"],
)

COMMANDS = Case(
    "commands",
    {
        "compose.yaml": """\
services:
  shell:
    image: busybox:1.36
    command: sh -c 'echo "$$HOME is home" && sleep 1'
    env_file: shell.env
    environment:
      - MESSAGE=${GREETING:-unset} from ${USER_NAME-nobody}
      - LITERAL=$$HOME
      - FROM_FILE=overridden
      - COUNT=3
  listed:
    image: busybox:1.36
    entrypoint: /docker-entrypoint.sh --verbose
    command: ["echo", "a b", "$${NOT_INTERPOLATED}"]
    user: "1000:1000"
    working_dir: /srv
    stop_signal: SIGINT
    tty: true
    stdin_open: true
    labels:
      - com.example.team=core
      - com.example.flag
  cleared:
    image: busybox:1.36
    entrypoint: []
    command: []
    labels:
      com.example.tier: 1
""",
        ".env": "GREETING=hello\n",
        "shell.env": "FROM_FILE=file\nONLY_IN_FILE='a b'\n",
    },
    stack="commands",
    services={
        "shell": ext(
            "busybox:1.36",
            command=["sh", "-c", 'echo "$HOME is home" && sleep 1'],
            environment={
                "FROM_FILE": "overridden",
                "ONLY_IN_FILE": "a b",
                "MESSAGE": "hello from nobody",
                "LITERAL": "$HOME",
                "COUNT": "3",
            },
        ),
        "listed": ext(
            "busybox:1.36",
            entrypoint=["/docker-entrypoint.sh", "--verbose"],
            command=["echo", "a b", "${NOT_INTERPOLATED}"],
            user="1000:1000",
            working_dir="/srv",
            stop_signal="SIGINT",
            tty=True,
            stdin_open=True,
            labels={"com.example.team": "core", "com.example.flag": ""},
        ),
        "cleared": ext("busybox:1.36", entrypoint=[], labels={"com.example.tier": "1"}),
    },
    v1=True,
)

DEPENDS_ON = Case(
    "depends_on",
    {
        "compose.yaml": """\
services:
  db:
    image: postgres:16
    healthcheck:
      test: ["CMD", "pg_isready"]
  migrate:
    image: app:1
    command: ["migrate"]
    depends_on:
      db:
        condition: service_healthy
  seed:
    image: app:1
    depends_on:
      migrate:
        condition: service_completed_successfully
  api:
    image: app:1
    depends_on:
      db:
        condition: service_healthy
        restart: true
      seed:
        condition: service_completed_successfully
      cache:
        condition: service_started
  cache:
    image: redis:7
  worker:
    image: app:1
    depends_on: [db, cache]
"""
    },
    stack="depends_on",
    services={
        "db": ext("postgres:16", healthcheck=cmd("pg_isready")),
        "migrate": ext("app:1", command=["migrate"], depends_on={"db": "service_healthy"}, oneshot=True),
        "seed": ext("app:1", depends_on={"migrate": "service_completed_successfully"}, oneshot=True),
        "api": ext(
            "app:1",
            depends_on={
                "db": "service_healthy",
                "seed": "service_completed_successfully",
                "cache": "service_started",
            },
        ),
        "cache": ext("redis:7"),
        "worker": ext("app:1", depends_on={"db": "service_started", "cache": "service_started"}),
    },
    notes=["depends_on restart ignored (api): envkit does not restart a service's dependents"],
)

HEALTHCHECKS = Case(
    "healthchecks",
    {
        "compose.yaml": """\
services:
  a:
    image: x:1
    healthcheck:
      test: ["CMD", "curl", "-f", "http://localhost/"]
      interval: 5s
      timeout: 3s
      retries: 4
      start_period: 10s
  b:
    image: x:1
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U $${POSTGRES_USER}"]
      interval: 1m30s
  c:
    image: x:1
    healthcheck:
      test: redis-cli ping
  d:
    image: x:1
    healthcheck:
      test: ["NONE"]
  e:
    image: x:1
    healthcheck:
      disable: true
  f:
    image: x:1
    healthcheck:
      interval: 500ms
      retries: 20
"""
    },
    stack="healthchecks",
    services={
        "a": ext("x:1", healthcheck=cmd("curl", "-f", "http://localhost/"), start_timeout=30.0),
        "b": ext(
            "x:1", healthcheck=cmd("/bin/sh", "-c", "pg_isready -U ${POSTGRES_USER}"), start_timeout=270.0
        ),
        "c": ext("x:1", healthcheck=cmd("/bin/sh", "-c", "redis-cli ping")),
        "d": ext("x:1", healthcheck={"kind": "none"}),
        "e": ext("x:1", healthcheck={"kind": "none"}),
        "f": ext("x:1", start_timeout=10.0),
    },
    v1=True,
)

VOLUMES = Case(
    "volumes",
    {
        "compose.yaml": """\
services:
  db:
    image: postgres:16
    volumes:
      - pgdata:/var/lib/postgresql/data
      - ./init:/docker-entrypoint-initdb.d:ro
      - ./conf/pg.conf:/etc/postgresql.conf:ro,z
      - ./logs:/var/log/postgresql:rw
      - /scratch
    tmpfs:
      - /run
      - /tmp:size=64m
  app:
    image: python:3.12
    volumes:
      - type: volume
        source: pgdata
        target: /data
        read_only: true
      - type: bind
        source: ./src
        target: /src
      - type: tmpfs
        target: /cache
        tmpfs:
          size: 1000000
      - type: volume
        target: /anon
      - type: volume
        source: uploads
        target: /uploads
volumes:
  pgdata:
  uploads: {}
  unused:
""",
        "init/01.sql": "select 1;\n",
        "conf/pg.conf": "fsync = off\n",
        "src/app.py": "print(1)\n",
    },
    stack="volumes",
    services={
        "db": ext(
            "postgres:16",
            volumes=[
                {
                    "type": "volume",
                    "source": "pgdata",
                    "target": "/var/lib/postgresql/data",
                    "read_only": False,
                },
                {
                    "type": "bind",
                    "source": "{root}/init",
                    "target": "/docker-entrypoint-initdb.d",
                    "read_only": True,
                },
                {
                    "type": "bind",
                    "source": "{root}/conf/pg.conf",
                    "target": "/etc/postgresql.conf",
                    "read_only": True,
                },
                {
                    "type": "bind",
                    "source": "{root}/logs",
                    "target": "/var/log/postgresql",
                    "read_only": False,
                },
                {"type": "volume", "source": None, "target": "/scratch", "read_only": False},
                {"type": "tmpfs", "target": "/run", "read_only": False},
                {"type": "tmpfs", "target": "/tmp", "read_only": False},
            ],
        ),
        "app": ext(
            "python:3.12",
            volumes=[
                {"type": "volume", "source": "pgdata", "target": "/data", "read_only": True},
                {"type": "bind", "source": "{root}/src", "target": "/src", "read_only": False},
                {"type": "tmpfs", "target": "/cache", "read_only": False},
                {"type": "volume", "source": None, "target": "/anon", "read_only": False},
                {"type": "volume", "source": "uploads", "target": "/uploads", "read_only": False},
            ],
        ),
    },
    volumes=["pgdata", "uploads"],
    notes=[
        "services.db.volumes: {root}/logs does not exist: it is created at start",
        "bind mount options (SELinux z/Z, propagation) ignored (db)",
        "tmpfs size and mode ignored (db, app)",
    ],
    v1=True,
)

FILES_AND_NETWORKS = Case(
    "secrets_networks",
    {
        "compose.yaml": """\
services:
  api:
    image: app:1
    secrets:
      - db_password
      - source: api_key
        target: api.key
      - source: cert
        target: /etc/ssl/cert.pem
    configs:
      - app_config
      - source: app_config
        target: /etc/app/config.yaml
    networks:
      backend:
        aliases: [api.internal, api-v1]
      frontend:
  db:
    image: postgres:16
    networks: [backend]
    links: ["api:legacy-api"]
networks:
  backend:
  frontend:
    driver: bridge
secrets:
  db_password:
    file: ./secrets/db_password.txt
  api_key:
    file: ./secrets/api.key
  cert:
    file: ./certs/cert.pem
configs:
  app_config:
    file: ./config/app.yaml
""",
        "secrets/db_password.txt": "hunter2\n",
        "secrets/api.key": "k\n",
        "certs/cert.pem": "pem\n",
        "config/app.yaml": "debug: true\n",
    },
    stack="secrets_networks",
    services={
        "api": ext(
            "app:1",
            volumes=[
                {
                    "type": "bind",
                    "source": "{root}/secrets/db_password.txt",
                    "target": "/run/secrets/db_password",
                    "read_only": True,
                },
                {
                    "type": "bind",
                    "source": "{root}/secrets/api.key",
                    "target": "/run/secrets/api.key",
                    "read_only": True,
                },
                {
                    "type": "bind",
                    "source": "{root}/certs/cert.pem",
                    "target": "/etc/ssl/cert.pem",
                    "read_only": True,
                },
                {
                    "type": "bind",
                    "source": "{root}/config/app.yaml",
                    "target": "/app_config",
                    "read_only": True,
                },
                {
                    "type": "bind",
                    "source": "{root}/config/app.yaml",
                    "target": "/etc/app/config.yaml",
                    "read_only": True,
                },
            ],
            aliases=["api.internal", "api-v1", "legacy-api"],
        ),
        "db": ext("postgres:16"),
    },
    notes=[
        "networks.frontend: its settings are ignored: every service is on the stack's one private "
        "network, reachable by its name and aliases",
        "services.db.links: not needed: every service reaches every other by name; 'legacy-api' is "
        "an alias of api",
    ],
    v1=True,
)

PROFILES = Case(
    "profiles",
    {
        "compose.yaml": """\
services:
  app:
    image: app:1
    depends_on:
      adminer:
        condition: service_started
        required: false
  db:
    image: postgres:16
  adminer:
    image: adminer:4
    profiles: [debug]
    depends_on: [db]
  tests:
    image: app:1
    profiles: [test, ci]
    depends_on: [db]
"""
    },
    stack="profiles",
    env={"COMPOSE_PROFILES": "test"},
    services={
        "app": ext("app:1"),
        "db": ext("postgres:16"),
        "tests": ext("app:1", depends_on={"db": "service_started"}),
    },
    notes=[
        "not in the stack: adminer (their profiles are not active; active: test; select them with "
        "COMPOSE_PROFILES)",
        "services.app.depends_on: adminer is not in the stack: its profiles are not active; left out "
        "(required: false)",
    ],
)

ANCHORS_AND_TRAPS = Case(
    "anchors",
    {
        "compose.yaml": """\
x-logging: &logging
  driver: json-file
x-base: &base
  image: app:1
  logging: *logging
  environment: &env
    TZ: UTC
    PORT: 0123
    SWITCH: on
    SIXTY: 22:22
    ANSWER: yes
    VERSION: 1.10
    QUOTED_VERSION: "1.10"
    DATE: 2024-01-01
    OCTAL: 0o17
    HEX: 0x1F
    BIG: 1e3
    NOTHING: ~
services:
  one:
    <<: *base
    ports: [22:22]
  two:
    <<: [*base]
    environment:
      <<: *env
      TZ: Europe/Paris
"""
    },
    stack="anchors",
    services={
        name: ext(
            "app:1",
            environment={
                "TZ": tz,
                "PORT": "0123",  # YAML 1.1: 83
                "SWITCH": "on",  # YAML 1.1: True
                "SIXTY": "22:22",  # YAML 1.1: 1342
                "ANSWER": "yes",
                "VERSION": "1.1",  # a number, as compose reads it too
                "QUOTED_VERSION": "1.10",
                "DATE": "2024-01-01",
                "OCTAL": "15",
                "HEX": "31",
                "BIG": "1000",
            },
            **more,
        )
        for name, tz, more in (("one", "UTC", {"ports": [22]}), ("two", "Europe/Paris", {}))
    },
    notes=[
        published("one", "22:22", 22),
        "logging ignored (one, two): envkit reads logs from Docker's default driver",
    ],
)

MERGED = Case(
    "merged",
    {
        "compose.yaml": """\
services:
  app:
    image: app:1
    command: ["serve", "--workers", "4"]
    ports: ["8000:8000", "9000"]
    environment:
      MODE: prod
      KEEP: "1"
      DROP: "x"
    volumes:
      - data:/data
      - ./conf:/conf:ro
    labels:
      tier: web
    healthcheck:
      test: ["CMD", "true"]
      interval: 10s
  db:
    image: postgres:15
    ports: ["5432"]
volumes:
  data:
""",
        "compose.override.yaml": """\
services:
  app:
    command: ["serve", "--reload"]
    ports: ["8001:8000", "9100"]
    environment:
      - MODE=dev
      - DEBUG=1
      - DROP
    volumes:
      - ./data:/data
    labels:
      owner: me
    healthcheck:
      retries: 2
""",
        "compose.test.yaml": """\
services:
  app:
    environment:
      MODE: test
    labels: !override
      only: test
  db:
    image: postgres:16
    ports: !reset []
""",
        "conf/x": "1\n",
    },
    stack="merged",
    env={"COMPOSE_FILE": "compose.yaml:compose.override.yaml:compose.test.yaml"},
    services={
        "app": ext(
            "app:1",
            command=["serve", "--reload"],  # replaced, not appended
            ports=[8000, 9000, 9100],  # 8000:8000 and 8001:8000 are two entries of one container port
            environment={"MODE": "test", "KEEP": "1", "DEBUG": "1"},  # DROP: passed through, unset
            volumes=[
                {"type": "bind", "source": "{root}/data", "target": "/data", "read_only": False},
                {"type": "bind", "source": "{root}/conf", "target": "/conf", "read_only": True},
            ],
            labels={"only": "test"},
            healthcheck=cmd("true"),
            start_timeout=20.0,
        ),
        "db": ext("postgres:16"),
    },
    notes=[
        published("app", "8000:8000", 8000),
        published("app", "8001:8000", 8000),
        "services.app.volumes: {root}/data does not exist: it is created at start",
    ],
)

SINGLETONS = Case(
    "singletons",
    {
        "compose.yaml": """\
version: "3.9"
name: ${PROJECT:-tools}
services:
  search:
    image: elasticsearch:8.14.0
    ulimits:
      nofile: {soft: 65536, hard: 65536}
    ipc: host
    attach: false
    init: true
    hostname: es
    deploy:
      resources:
        limits: {memory: 1g}
    develop:
      watch:
        - path: ./src
          action: sync
          target: /src
    x-envkit-note: extension fields are dropped
    platform: linux/amd64
    pull_policy: daily
"""
    },
    stack="tools",
    services={"search": ext("elasticsearch:8.14.0", pull_policy="missing")},
    notes=[
        "version is obsolete: ignored (as compose ignores it)",
        "services.search.pull_policy: daily is taken as missing (pull only when absent)",
        "services.search.platform: ignored for a pulled image (the daemon's platform is used)",
        "attach ignored (search): envkit shows a service's log when it fails",
        "deploy ignored (search)",
        "develop ignored (search): watch mode is for development, not test runs",
        "hostname ignored (search): services reach each other by service name and aliases",
        "init ignored (search)",
        "ipc ignored (search)",
        "ulimits ignored (search)",
    ],
)

# What compose passes on to the engine as written, though the engine will read it otherwise or
# refuse it later: an environment name holding '=' (the container sees A with the value B=x)
# and a platform no engine has. compose (v2's loader, and v1) accepts both at load: so does envkit
# for a compose file (envkit.toml refuses them).
AS_WRITTEN = Case(
    "as-written",
    {
        "compose.yaml": """\
services:
  app:
    build: .
    platform: linux/nosuch
    environment:
      "A=B": x
      URL: "http://h/?a=1&b=2"
  tool:
    image: busybox:1.36
    platform: nosuch
    environment:
      - C=d=e
""",
        "Dockerfile": "FROM busybox:1.36\n",
    },
    stack="as-written",
    images={"app": {"context": "{root}", "dockerfile": "{root}/Dockerfile", "platform": "linux/nosuch"}},
    services={
        "app": ext("app", built=True, environment={"A=B": "x", "URL": "http://h/?a=1&b=2"}),
        "tool": ext("busybox:1.36", environment={"C": "d=e"}),
    },
    notes=["services.tool.platform: ignored for a pulled image (the daemon's platform is used)"],
    v1=True,
)

CASES = [
    PORTS,
    BUILD,
    ENVIRONMENT,
    COMMANDS,
    DEPENDS_ON,
    HEALTHCHECKS,
    VOLUMES,
    FILES_AND_NETWORKS,
    PROFILES,
    ANCHORS_AND_TRAPS,
    MERGED,
    SINGLETONS,
    AS_WRITTEN,
]
