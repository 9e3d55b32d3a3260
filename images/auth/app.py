"""auth: registers users and issues JWTs (the demo stack's identity service).

Python's standard library plus psycopg2 and PyJWT, one file, no framework:

    GET  /health  200 once PostgreSQL answers, else 503
    POST /users   {"username", "password"} -> 201 {"username"}; 409 if the name is taken
    POST /login   {"username", "password"} -> 200 {"access_token", "token_type", "expires_in"}; 401
    GET  /me      Authorization: Bearer <token> -> 200 {"username"}; 401

Tokens are HS256 JWTs with the claims sub (the username), iss, iat and exp. Any service
that knows JWT_SECRET and JWT_ISSUER can check them itself (the api does).

Settings come from the environment: DATABASE_URL, JWT_SECRET, JWT_ISSUER, TOKEN_TTL
(seconds) and PORT (8000). Every request is logged as one line on stdout.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import signal
import sys
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import jwt
import psycopg2

DATABASE_URL = os.environ["DATABASE_URL"]
JWT_SECRET = os.environ["JWT_SECRET"]
JWT_ISSUER = os.environ["JWT_ISSUER"]
TOKEN_TTL = int(os.environ.get("TOKEN_TTL", "300"))
PORT = int(os.environ.get("PORT", "8000"))

# scrypt with a random salt per user; these costs take ~50 ms and 16 MiB per hash.
SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    username      TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,  -- 'scrypt$<salt hex>$<hash hex>'
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""

log = logging.getLogger("auth")


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


# --- passwords and tokens -------------------------------------------------------------------


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    _, salt_hex, _ = stored.split("$")
    # compare_digest takes as long for a wrong password as for an almost-right one
    return hmac.compare_digest(hash_password(password, bytes.fromhex(salt_hex)), stored)


# Checked against when the user does not exist, so that a login takes as long either way
# and its timing does not tell which usernames exist.
DUMMY_HASH = hash_password(secrets.token_hex(16))


def issue_token(username: str) -> str:
    now = int(time.time())
    claims = {"sub": username, "iss": JWT_ISSUER, "iat": now, "exp": now + TOKEN_TTL}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def verify_token(token: str) -> dict:
    """The token's claims, or HTTPError 401 saying what is wrong with it."""
    try:
        return jwt.decode(
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


# --- HTTP -----------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    server_version = "envkit-demo-auth"

    def do_GET(self) -> None:
        self.dispatch({"/health": self.health, "/me": self.me})

    def do_POST(self) -> None:
        self.dispatch({"/users": self.create_user, "/login": self.login})

    def dispatch(self, routes: dict) -> None:
        """Route by path, turn the handler's result or error into a JSON answer, log it."""
        started = time.monotonic()
        path = urlsplit(self.path).path
        try:
            handler = routes.get(path)
            if handler is None:
                raise HTTPError(HTTPStatus.NOT_FOUND, f"no route {self.command} {path}")
            status, body = handler()
        except HTTPError as err:
            status, body = err.status, {"error": err.message}
        except Exception:
            log.exception("%s %s failed", self.command, path)
            status, body = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error (see the log)"}
        self.send_json(status, body)
        log.info("%s %s -> %d (%.1f ms)", self.command, path, status, (time.monotonic() - started) * 1000)

    # GET /health
    def health(self) -> tuple[HTTPStatus, dict]:
        try:
            with db_cursor() as cur:
                cur.execute("SELECT 1")
        except psycopg2.Error as err:
            raise HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, f"database: {str(err).strip()}") from None
        return HTTPStatus.OK, {"status": "ok"}

    # POST /users
    def create_user(self) -> tuple[HTTPStatus, dict]:
        username, password = self.credentials()
        with db_cursor() as cur:
            cur.execute(
                "INSERT INTO users (username, password_hash) VALUES (%s, %s)"
                " ON CONFLICT (username) DO NOTHING RETURNING username",
                (username, hash_password(password)),
            )
            if cur.fetchone() is None:
                raise HTTPError(HTTPStatus.CONFLICT, f"user {username!r} already exists")
        return HTTPStatus.CREATED, {"username": username}

    # POST /login
    def login(self) -> tuple[HTTPStatus, dict]:
        username, password = self.credentials()
        with db_cursor() as cur:
            cur.execute("SELECT password_hash FROM users WHERE username = %s", (username,))
            row = cur.fetchone()
        stored = row[0] if row else DUMMY_HASH  # hash even for an unknown user: same timing
        if not check_password(password, stored) or row is None:
            raise HTTPError(HTTPStatus.UNAUTHORIZED, "wrong username or password")
        token = issue_token(username)
        return HTTPStatus.OK, {"access_token": token, "token_type": "bearer", "expires_in": TOKEN_TTL}

    # GET /me
    def me(self) -> tuple[HTTPStatus, dict]:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPError(HTTPStatus.UNAUTHORIZED, "missing bearer token (Authorization: Bearer <token>)")
        username = verify_token(token.strip())["sub"]
        with db_cursor() as cur:  # a valid token for a user that was since deleted is refused
            cur.execute("SELECT 1 FROM users WHERE username = %s", (username,))
            if cur.fetchone() is None:
                raise HTTPError(HTTPStatus.UNAUTHORIZED, f"user {username!r} no longer exists")
        return HTTPStatus.OK, {"username": username}

    # --- helpers ---

    def credentials(self) -> tuple[str, str]:
        body = self.read_json()
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not 1 <= len(username) <= 64:
            raise HTTPError(HTTPStatus.BAD_REQUEST, "username must be a string of 1 to 64 characters")
        if not isinstance(password, str) or not password:
            raise HTTPError(HTTPStatus.BAD_REQUEST, "password must be a non-empty string")
        return username, password

    def read_json(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            raise HTTPError(HTTPStatus.BAD_REQUEST, "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise HTTPError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        return body

    def send_json(self, status: HTTPStatus, body: dict) -> None:
        data = json.dumps(body).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Bearer realm="envkit-demo"')
        self.end_headers()
        self.wfile.write(data)

    def log_request(self, code="-", size="-") -> None:
        pass  # dispatch() logs each request once, with its duration

    def log_message(self, format: str, *args) -> None:
        log.info("%s: %s", self.address_string(), format % args)  # e.g. a malformed request


def main() -> None:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # `docker stop` sends SIGTERM; as PID 1 we would ignore it without a handler.
    # SystemExit unwinds serve_forever() and the process exits at once.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    wait_for_database()
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)  # a thread per request
    log.info("listening on port %d", PORT)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        log.info("stopped")


if __name__ == "__main__":
    main()
