"""api: notes in PostgreSQL, cached in Redis, for users holding a JWT from the auth service.

Python's standard library plus psycopg2, redis, PyJWT and websockets, one file:

    HTTP on PORT (8000), every route but /health needs Authorization: Bearer <token>
    GET  /health      200 once PostgreSQL and Redis answer, else 503
    POST /notes       {"text"} -> 201 {"id", "owner", "text"}; owner is the token's sub
    GET  /notes       200 {"notes": [...]}: the caller's notes, oldest first
    GET  /notes/<id>  200 the note, read through Redis (header X-Cache: hit or miss,
                      key "note:<id>"); 404 unless the caller owns it

    WebSocket on WS_PORT (8001), token in ?token=... or Authorization: Bearer <token>;
    without a valid one the handshake is answered with HTTP 401. Once connected the
    server sends {"hello": <username>}, then answers each JSON message with
    {"echo": <message>, "user": <username>}.

The api checks tokens itself, without asking auth: it knows the same JWT_SECRET and
JWT_ISSUER. Settings: DATABASE_URL, REDIS_URL, JWT_SECRET, JWT_ISSUER, PORT, WS_PORT,
CACHE_TTL (seconds). Every request is logged as one line on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jwt
import psycopg2
import redis
import websockets

DATABASE_URL = os.environ["DATABASE_URL"]
REDIS_URL = os.environ["REDIS_URL"]
JWT_SECRET = os.environ["JWT_SECRET"]
JWT_ISSUER = os.environ["JWT_ISSUER"]
PORT = int(os.environ.get("PORT", "8000"))
WS_PORT = int(os.environ.get("WS_PORT", "8001"))
CACHE_TTL = int(os.environ.get("CACHE_TTL", "300"))

SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
    id         BIGSERIAL PRIMARY KEY,
    owner      TEXT NOT NULL,
    text       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS notes_owner ON notes (owner, id)
"""

log = logging.getLogger("api")
# One client for all threads: it keeps a thread-safe pool of connections.
cache = redis.Redis.from_url(REDIS_URL, socket_timeout=3, socket_connect_timeout=3)


class HTTPError(Exception):
    """Raised by a handler to answer with ``status`` and ``{"error": message}``."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- the database ---------------------------------------------------------------------------


@contextlib.contextmanager
def db_cursor():
    """A cursor in a transaction on a fresh connection: committed on success, then closed.

    One connection per request keeps the code simple and survives a database restart;
    a busy service would use psycopg2.pool instead.
    """
    conn = psycopg2.connect(DATABASE_URL, connect_timeout=3)
    try:
        with conn, conn.cursor() as cur:  # `with conn` commits, or rolls back on an error
            yield cur
    finally:
        conn.close()


def wait_for_database() -> None:
    """Retry until PostgreSQL accepts a connection, then create the table."""
    attempt = 0
    while True:
        attempt += 1
        try:
            with db_cursor() as cur:
                cur.execute(SCHEMA)
            log.info("database ready after %d attempt(s)", attempt)
            return
        except psycopg2.OperationalError as err:
            if attempt == 1 or attempt % 10 == 0:  # say why, without flooding the log
                log.info("waiting for the database (attempt %d): %s", attempt, str(err).strip())
            time.sleep(0.5)


# --- tokens ---------------------------------------------------------------------------------


def verify_token(token: str) -> str:
    """The username (sub) of a valid token from auth; HTTPError 401 saying what is wrong."""
    if not token:
        raise HTTPError(HTTPStatus.UNAUTHORIZED, "missing bearer token")
    try:
        claims = jwt.decode(
            token,
            JWT_SECRET,
            algorithms=["HS256"],  # never let the token choose its own algorithm
            issuer=JWT_ISSUER,
            options={"require": ["sub", "iss", "iat", "exp"]},
        )
    except jwt.ExpiredSignatureError:
        raise HTTPError(HTTPStatus.UNAUTHORIZED, "token expired") from None
    except jwt.InvalidIssuerError:
        raise HTTPError(HTTPStatus.UNAUTHORIZED, "token has the wrong issuer") from None
    except jwt.InvalidTokenError as err:
        raise HTTPError(HTTPStatus.UNAUTHORIZED, f"invalid token: {err}") from None
    return claims["sub"]


def bearer_token(headers) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or ""."""
    scheme, _, token = (headers.get("Authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


# --- HTTP -----------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    server_version = "envkit-demo-api"

    def do_GET(self) -> None:
        self.dispatch()

    def do_POST(self) -> None:
        self.dispatch()

    def dispatch(self) -> None:
        """Route the request, turn the result or error into a JSON answer, log it."""
        started = time.monotonic()
        path = urlsplit(self.path).path
        headers: dict[str, str] = {}
        try:
            status, body, headers = self.route(self.command, path.rstrip("/").split("/")[1:])
        except HTTPError as err:
            status, body = err.status, {"error": err.message}
        except Exception:
            log.exception("%s %s failed", self.command, path)
            status, body = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error (see the log)"}
        self.send_json(status, body, headers)
        log.info("%s %s -> %d (%.1f ms)", self.command, path, status, (time.monotonic() - started) * 1000)

    def route(self, method: str, parts: list[str]) -> tuple[HTTPStatus, dict, dict[str, str]]:
        if parts == ["health"] and method == "GET":
            return self.health()
        if parts[:1] == ["notes"] and len(parts) <= 2:
            user = verify_token(bearer_token(self.headers))  # 401 before anything else
            if len(parts) == 1 and method == "POST":
                return self.create_note(user)
            if len(parts) == 1 and method == "GET":
                return self.list_notes(user)
            if method == "GET":
                return self.get_note(user, parts[1])
        raise HTTPError(HTTPStatus.NOT_FOUND, f"no route {method} /{'/'.join(parts)}")

    # GET /health
    def health(self):
        try:
            with db_cursor() as cur:
                cur.execute("SELECT 1")
        except psycopg2.Error as err:
            raise HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, f"database: {str(err).strip()}") from None
        try:
            cache.ping()
        except redis.RedisError as err:
            raise HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, f"redis: {err}") from None
        return HTTPStatus.OK, {"status": "ok"}, {}

    # POST /notes
    def create_note(self, user: str):
        text = self.read_json().get("text")
        if not isinstance(text, str) or not text:
            raise HTTPError(HTTPStatus.BAD_REQUEST, 'send {"text": "..."} with a non-empty string')
        with db_cursor() as cur:
            cur.execute("INSERT INTO notes (owner, text) VALUES (%s, %s) RETURNING id", (user, text))
            (note_id,) = cur.fetchone()
        return HTTPStatus.CREATED, {"id": note_id, "owner": user, "text": text}, {}

    # GET /notes
    def list_notes(self, user: str):
        with db_cursor() as cur:
            cur.execute("SELECT id, owner, text FROM notes WHERE owner = %s ORDER BY id", (user,))
            notes = [{"id": i, "owner": o, "text": t} for i, o, t in cur.fetchall()]
        return HTTPStatus.OK, {"notes": notes}, {}

    # GET /notes/<id>: read-through cache. Notes never change, so a cached copy stays right.
    def get_note(self, user: str, raw_id: str):
        if not raw_id.isdigit():
            raise HTTPError(HTTPStatus.NOT_FOUND, f"no note {raw_id!r}")
        key = f"note:{int(raw_id)}"
        cached = cache.get(key)
        if cached is not None:
            note, source = json.loads(cached), "hit"
        else:
            with db_cursor() as cur:
                cur.execute("SELECT id, owner, text FROM notes WHERE id = %s", (int(raw_id),))
                row = cur.fetchone()
            note, source = None, "miss"
            if row is not None:
                note = {"id": row[0], "owner": row[1], "text": row[2]}
                cache.set(key, json.dumps(note), ex=CACHE_TTL)
        # Someone else's note gets the same answer as a missing one: ids reveal nothing.
        if note is None or note["owner"] != user:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"no note {raw_id}")
        return HTTPStatus.OK, note, {"X-Cache": source}

    # --- helpers ---

    def read_json(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            raise HTTPError(HTTPStatus.BAD_REQUEST, "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise HTTPError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        return body

    def send_json(self, status: HTTPStatus, body: dict, headers: dict[str, str]) -> None:
        data = json.dumps(body).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Bearer realm="envkit-demo"')
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_request(self, code="-", size="-") -> None:
        pass  # dispatch() logs each request once, with its duration

    def log_message(self, format: str, *args) -> None:
        log.info("%s: %s", self.address_string(), format % args)  # e.g. a malformed request


# --- WebSocket ------------------------------------------------------------------------------


def websocket_token(path: str, headers) -> str:
    """The token of ``?token=...``, else of the Authorization header, else ""."""
    query = parse_qs(urlsplit(path).query)
    return query.get("token", [""])[0] or bearer_token(headers)


async def check_handshake(path: str, request_headers):
    """websockets' process_request hook: None accepts the handshake, a response refuses it."""
    try:
        verify_token(websocket_token(path, request_headers))
    except HTTPError as err:
        log.info("WS %s -> %d (%s)", urlsplit(path).path, err.status, err.message)
        body = json.dumps({"error": err.message}).encode() + b"\n"
        return err.status, [("Content-Type", "application/json")], body
    return None


async def websocket_session(ws) -> None:
    """Greet the user, then echo each JSON message back with the user's name."""
    try:  # checked in check_handshake; this fails only if it expired in between
        user = verify_token(websocket_token(ws.path, ws.request_headers))
    except HTTPError as err:
        await ws.close(code=1008, reason=err.message)  # 1008: policy violation
        return
    log.info("WS %s -> connected (%s)", urlsplit(ws.path).path, user)
    await ws.send(json.dumps({"hello": user}))
    async for raw in ws:  # ends when the client closes the connection
        try:
            message = json.loads(raw)
        except ValueError:
            await ws.send(json.dumps({"error": "messages must be JSON"}))
            continue
        await ws.send(json.dumps({"echo": message, "user": user}))
    log.info("WS %s -> closed (%s)", urlsplit(ws.path).path, user)


def run_websocket_server(ready: threading.Event) -> None:
    """Serve WebSockets forever on an asyncio loop of this (daemon) thread."""

    async def serve() -> None:
        async with websockets.serve(websocket_session, "0.0.0.0", WS_PORT, process_request=check_handshake):
            ready.set()
            await asyncio.Future()  # never done: the process ends the thread

    asyncio.run(serve())


def main() -> None:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)  # we log connections ourselves
    # `docker stop` sends SIGTERM; as PID 1 we would ignore it without a handler.
    # SystemExit unwinds serve_forever() and the process exits at once (the WebSocket
    # thread is a daemon thread: it does not hold the exit up).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    wait_for_database()

    ready = threading.Event()
    threading.Thread(target=run_websocket_server, args=(ready,), daemon=True, name="websocket").start()
    if not ready.wait(timeout=10):
        sys.exit(f"the WebSocket server did not start on port {WS_PORT} (see the error above)")
    log.info("WebSocket listening on port %d", WS_PORT)

    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)  # a thread per request
    log.info("HTTP listening on port %d", PORT)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        log.info("stopped")


if __name__ == "__main__":
    main()
