"""Fixtures of the e2e suite, which runs against the demo stack of envkit.toml.

Run it with ``pytest -n auto tests/e2e``. envkit's pytest plugin starts the services
the selected tests name in ``@pytest.mark.services(...)`` (plus their depends_on), once,
and every xdist worker shares that one stack through the ``envkit_stack`` fixture.

Per-worker isolation
--------------------
The workers run at the same time against the same PostgreSQL and Redis, so no test
may assume it is alone. Two rules keep them apart:

1. Data made through the apps is unique to its test. Every test registers its own
   users (``user``, ``new_user``: named ``u-<worker>-<random>``), and the api only
   shows a user their own notes, so tests never see each other's rows.

2. Data a test writes straight into a backing service goes into a namespace of its
   worker, named after ``envkit_worker_id`` (``gw0``, ``gw1``, ... under xdist,
   ``main`` without):

   * ``pg_database``: the PostgreSQL database ``e2e_<worker>_<run>``, created the
     first time a test of the worker asks for it and dropped when the worker's
     session ends. It yields the database's DSN. ``<run>`` tells apart two runs of
     one checkout at once (two terminals, a pre-push hook), which share the stack
     and both have a gw0: xdist's test run id, shared by a run's workers.
   * ``redis_db``: a Redis client on database ``1 + <worker number> % 15``
     (``main`` and gw0 -> 1, gw3 -> 4). Database 0 is the api's cache, so the
     workers use 1 to 15; it is flushed when the worker starts and when it ends.
     With more than 15 workers two workers share a database, and so do two runs
     of one checkout at once: keep such tests' keys prefixed with the worker id.

   Both fixtures are session-scoped: each worker makes its namespace once and all
   its tests reuse it. Nothing is shared between workers, so nothing needs a lock.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import jwt
import psycopg2
import pytest
import redis
from psycopg2 import sql

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HTTP_TIMEOUT = 10  # seconds for one request to a service of the stack
REDIS_DATABASES = 16  # Redis's default number of databases (0-15)
API_CACHE_DB = 0  # the database of REDIS_URL in envkit.toml: the api's note cache
# Signs forged tokens; as long as a real secret (PyJWT warns about HMAC keys under 32 bytes)
WRONG_SECRET = "a-guessed-secret-as-long-as-a-real-one"


# --- a small JSON client over urllib --------------------------------------------------------


@dataclass
class Response:
    method: str
    url: str
    status: int
    headers: Message
    body: Any  # the decoded JSON, or the text when the answer is not JSON

    def expect(self, status: int) -> Any:
        """The body, after checking the status; the error shows the whole answer."""
        __tracebackhide__ = True  # pytest shows the test's line, not this one
        if self.status != status:
            raise AssertionError(
                f"{self.method} {self.url} answered {self.status}, expected {status}: {self.body!r}"
            )
        return self.body

    @property
    def error(self) -> str:
        """The ``error`` of a JSON error answer (both apps send ``{"error": "..."}``)."""
        assert isinstance(self.body, dict) and "error" in self.body, f"not an error answer: {self.body!r}"
        return str(self.body["error"])


class Client:
    """JSON over HTTP to one service: ``client.post("/users", {...}).expect(201)``."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def request(self, method: str, path: str, body: Any = None, token: str | None = None) -> Response:
        url = self.base_url + path
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as answer:
                status, answer_headers, raw = answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as err:  # 4xx and 5xx: an answer too, not an exception
            with err:
                status, answer_headers, raw = err.code, err.headers, err.read()
        text = raw.decode(errors="replace")
        try:
            decoded: Any = json.loads(text)
        except ValueError:
            decoded = text
        return Response(method, url, status, answer_headers, decoded)

    def get(self, path: str, token: str | None = None) -> Response:
        return self.request("GET", path, token=token)

    def post(self, path: str, body: Any, token: str | None = None) -> Response:
        return self.request("POST", path, body, token=token)


# --- the stack's services -------------------------------------------------------------------


@pytest.fixture
def auth(envkit_stack: Any) -> Client:
    return Client(envkit_stack.url("auth", 8000))


@pytest.fixture
def api(envkit_stack: Any) -> Client:
    return Client(envkit_stack.url("api", 8000))


@pytest.fixture
def ws_url(envkit_stack: Any) -> str:
    """The api's WebSocket endpoint, ``ws://127.0.0.1:PORT``."""
    return envkit_stack.url("api", 8001, scheme="ws")


def postgres_dsn(envkit_stack: Any, database: str = "postgres") -> str:
    """A DSN for ``database`` on the stack's PostgreSQL, through its published port."""
    host, port = envkit_stack.endpoint("postgres", 5432)
    return f"postgresql://postgres@{host}:{port}/{database}"


def redis_client(envkit_stack: Any, db: int) -> redis.Redis:
    host, port = envkit_stack.endpoint("redis", 6379)
    return redis.Redis(host=host, port=port, db=db, decode_responses=True, socket_timeout=HTTP_TIMEOUT)


# --- users and tokens -----------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    username: str
    password: str


@pytest.fixture
def new_user(auth: Client, envkit_worker_id: str) -> Callable[[], User]:
    """Registers a user no other test (of any worker) can have, and returns it."""

    def register() -> User:
        user = User(f"u-{envkit_worker_id}-{uuid.uuid4().hex[:12]}", secrets.token_urlsafe(16))
        auth.post("/users", {"username": user.username, "password": user.password}).expect(201)
        return user

    return register


@pytest.fixture
def user(new_user: Callable[[], User]) -> User:
    return new_user()


def login(auth: Client, user: User) -> str:
    """The access token auth issues for ``user``."""
    body = auth.post("/login", {"username": user.username, "password": user.password}).expect(200)
    return str(body["access_token"])


@pytest.fixture
def token(auth: Client, user: User) -> str:
    return login(auth, user)


@pytest.fixture(scope="session")
def stack_file(pytestconfig: pytest.Config) -> dict[str, Any]:
    """The stack file, parsed: the tests take settings such as JWT_SECRET from it, never a copy.

    ``ENVKIT_CONFIG`` names another stack file (e.g. envkit.alpine.toml), relative to the root.
    """
    path = Path(pytestconfig.rootpath) / os.environ.get("ENVKIT_CONFIG", "envkit.toml")
    return tomllib.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def make_token(stack_file: dict[str, Any]) -> Callable[..., str]:
    """Signs a JWT the way auth does, with any claim changed: ``make_token("bob", exp=-60)``.

    ``iat`` and ``exp`` are seconds from now; ``secret`` and ``iss`` default to auth's settings.
    """
    settings = stack_file["services"]["auth"]["environment"]

    def make(
        sub: str, *, iat: int = 0, exp: int = 300, iss: str | None = None, secret: str | None = None
    ) -> str:
        now = int(time.time())
        claims = {"sub": sub, "iss": iss or settings["JWT_ISSUER"], "iat": now + iat, "exp": now + exp}
        return jwt.encode(claims, secret or settings["JWT_SECRET"], algorithm="HS256")

    return make


# --- per-worker namespaces (see the module docstring) ---------------------------------------


# xdist gives every worker of one run the same test run id; without xdist, one of our own.
RUN_ID = (os.environ.get("PYTEST_XDIST_TESTRUNUID") or uuid.uuid4().hex)[:8]


def pg_database_name(worker_id: str) -> str:
    """``e2e_gw3_1a2b3c4d``: this worker's database in this run."""
    return f"e2e_{worker_id}_{RUN_ID}"


@pytest.fixture(scope="session")
def pg_database(envkit_stack: Any, envkit_worker_id: str) -> Iterator[str]:
    """This worker's own PostgreSQL database, ``e2e_<worker>_<run>``: yields its DSN."""
    database = pg_database_name(envkit_worker_id)
    name = sql.Identifier(database)

    def admin(*statements: sql.Composable) -> None:
        with closing(psycopg2.connect(postgres_dsn(envkit_stack), connect_timeout=HTTP_TIMEOUT)) as conn:
            conn.autocommit = True  # CREATE and DROP DATABASE cannot run in a transaction
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)

    # WITH (FORCE) ends sessions still connected to it (PostgreSQL 13+)
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name)
    admin(drop, sql.SQL("CREATE DATABASE {}").format(name))
    yield postgres_dsn(envkit_stack, database)
    admin(drop)


def worker_number(worker_id: str) -> int:
    """``gw3`` -> 3; ``main`` (no xdist) -> 0."""
    return int(worker_id[2:]) if worker_id.startswith("gw") else 0


@pytest.fixture(scope="session")
def redis_db(envkit_stack: Any, envkit_worker_id: str) -> Iterator[redis.Redis]:
    """A Redis client on this worker's own database (1-15; 0 is the api's cache)."""
    index = 1 + worker_number(envkit_worker_id) % (REDIS_DATABASES - 1)
    client = redis_client(envkit_stack, index)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()
