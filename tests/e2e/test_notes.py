"""The api's notes: stored in PostgreSQL, read through the Redis cache, private to their owner."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import closing
from typing import Any

import psycopg2
import pytest

from .conftest import API_CACHE_DB, Client, User, login, postgres_dsn, redis_client

# postgres and redis are named too: these tests also look at them directly
pytestmark = pytest.mark.services("auth", "api", "postgres", "redis")


def test_full_flow_register_login_create_and_read_back(
    auth: Client, api: Client, envkit_worker_id: str
) -> None:
    user = User(f"flow-{envkit_worker_id}-{uuid.uuid4().hex[:12]}", "correct horse battery staple")
    auth.post("/users", {"username": user.username, "password": user.password}).expect(201)
    token = login(auth, user)

    created = api.post("/notes", {"text": "buy milk"}, token=token).expect(201)
    assert created["owner"] == user.username
    assert created["text"] == "buy milk"
    assert isinstance(created["id"], int)

    assert api.get(f"/notes/{created['id']}", token=token).expect(200) == created
    assert api.get("/notes", token=token).expect(200) == {"notes": [created]}


def test_notes_persist_in_postgres(api: Client, token: str, user: User, envkit_stack: Any) -> None:
    texts = ["first", "second", "third"]
    created = [api.post("/notes", {"text": text}, token=token).expect(201) for text in texts]

    # A later request (a new connection on the api's side) lists them, oldest first
    listed = api.get("/notes", token=token).expect(200)["notes"]
    assert listed == created

    # and they are rows in PostgreSQL, read here without the api
    with closing(psycopg2.connect(postgres_dsn(envkit_stack))) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, owner, text FROM notes WHERE owner = %s ORDER BY id", (user.username,))
        rows = cur.fetchall()
    assert rows == [(note["id"], user.username, note["text"]) for note in created]


def test_second_read_is_a_redis_cache_hit(api: Client, token: str, envkit_stack: Any) -> None:
    note = api.post("/notes", {"text": "cache me"}, token=token).expect(201)
    path = f"/notes/{note['id']}"

    first = api.get(path, token=token)
    assert first.expect(200) == note
    assert first.headers["X-Cache"] == "miss"

    second = api.get(path, token=token)
    assert second.expect(200) == note
    assert second.headers["X-Cache"] == "hit"

    # The cached copy is in the api's Redis database, under the note's key, with a TTL
    cache = redis_client(envkit_stack, API_CACHE_DB)
    with closing(cache):
        key = f"note:{note['id']}"
        assert json.loads(cache.get(key) or "null") == note
        assert cache.ttl(key) > 0


def test_another_user_cannot_read_my_note(auth: Client, api: Client, new_user: Callable[[], User]) -> None:
    mine, theirs = login(auth, new_user()), login(auth, new_user())
    note = api.post("/notes", {"text": "private"}, token=mine).expect(201)
    path = f"/notes/{note['id']}"

    # Refused before and after the note is cached, with the answer a missing note gets
    api.get(path, token=theirs).expect(404)
    assert api.get(path, token=mine).expect(200) == note  # the owner can (and this caches it)
    api.get(path, token=theirs).expect(404)
    api.get(f"/notes/{note['id'] + 10**9}", token=theirs).expect(404)

    assert note not in api.get("/notes", token=theirs).expect(200)["notes"]


@pytest.mark.parametrize("body", [{}, {"text": ""}, {"text": 42}])
def test_malformed_note_is_a_bad_request(api: Client, token: str, body: dict) -> None:
    api.post("/notes", body, token=token).expect(400)
