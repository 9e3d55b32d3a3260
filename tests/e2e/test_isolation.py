"""The per-worker isolation pattern of conftest.py: each xdist worker has its own database
in PostgreSQL and its own Redis database. The tests are repeated so that several workers
run them at the same time, each asserting it sees only what it wrote itself.
"""

from __future__ import annotations

import uuid
from contextlib import closing

import psycopg2
import pytest
import redis

from .conftest import API_CACHE_DB, pg_database_name, worker_number

pytestmark = pytest.mark.services("postgres", "redis")

ROUNDS = range(4)


@pytest.mark.parametrize("round_", ROUNDS)
def test_worker_has_its_own_postgres_database(pg_database: str, envkit_worker_id: str, round_: int) -> None:
    mark = uuid.uuid4().hex
    with closing(psycopg2.connect(pg_database)) as conn, conn, conn.cursor() as cur:
        cur.execute("SELECT current_database()")
        assert cur.fetchone() == (pg_database_name(envkit_worker_id),)
        assert envkit_worker_id in pg_database_name(envkit_worker_id)
        cur.execute("CREATE TABLE IF NOT EXISTS visits (worker TEXT NOT NULL, mark TEXT NOT NULL)")
        cur.execute("INSERT INTO visits VALUES (%s, %s)", (envkit_worker_id, mark))
        cur.execute("SELECT DISTINCT worker FROM visits")
        assert cur.fetchall() == [(envkit_worker_id,)]  # no other worker's rows
        cur.execute("SELECT count(*) FROM visits WHERE mark = %s", (mark,))
        assert cur.fetchone() == (1,)


@pytest.mark.parametrize("round_", ROUNDS)
def test_worker_has_its_own_redis_database(redis_db: redis.Redis, envkit_worker_id: str, round_: int) -> None:
    index = redis_db.connection_pool.connection_kwargs["db"]
    assert index != API_CACHE_DB
    assert index == 1 + worker_number(envkit_worker_id) % 15

    key = f"{envkit_worker_id}:{uuid.uuid4().hex}"
    redis_db.set(key, envkit_worker_id, ex=60)
    assert redis_db.get(key) == envkit_worker_id
    # every key here is this worker's (with at most 15 workers, each has a database alone)
    assert {redis_db.get(k) for k in redis_db.scan_iter()} == {envkit_worker_id}


def test_worker_numbers() -> None:
    assert [worker_number(w) for w in ("main", "gw0", "gw3", "gw17")] == [0, 0, 3, 17]
