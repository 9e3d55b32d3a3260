"""The api's WebSocket endpoint (port 8001): a valid token is needed to connect."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from .conftest import WRONG_SECRET, User

pytestmark = pytest.mark.services("auth", "api")

TIMEOUT = 10  # seconds for the handshake and for each message


def test_token_in_query_connects_greets_and_echoes(ws_url: str, token: str, user: User) -> None:
    with connect(f"{ws_url}/?token={token}", open_timeout=TIMEOUT) as ws:
        assert json.loads(ws.recv(timeout=TIMEOUT)) == {"hello": user.username}
        for message in ({"n": 1}, ["a", "list"], "a string"):
            ws.send(json.dumps(message))
            assert json.loads(ws.recv(timeout=TIMEOUT)) == {"echo": message, "user": user.username}


def test_token_in_authorization_header_connects(ws_url: str, token: str, user: User) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with connect(ws_url, additional_headers=headers, open_timeout=TIMEOUT) as ws:
        assert json.loads(ws.recv(timeout=TIMEOUT)) == {"hello": user.username}


def refusal(uri: str) -> InvalidStatus:
    """The error of a handshake the server refuses (fails the test if it is accepted)."""
    with pytest.raises(InvalidStatus) as refused, connect(uri, open_timeout=TIMEOUT):
        pass
    return refused.value


def test_handshake_without_token_is_refused_with_401(ws_url: str) -> None:
    response = refusal(f"{ws_url}/").response
    assert response.status_code == 401
    assert "missing" in json.loads(response.body)["error"]


def test_handshake_with_expired_or_forged_token_is_refused_with_401(
    ws_url: str, user: User, make_token: Callable[..., str]
) -> None:
    with connect(f"{ws_url}/?token={make_token(user.username)}", open_timeout=TIMEOUT):
        pass  # the same token, but valid, is accepted
    expired = make_token(user.username, iat=-360, exp=-60)
    assert refusal(f"{ws_url}/?token={expired}").response.status_code == 401
    forged = make_token(user.username, secret=WRONG_SECRET)
    assert refusal(f"{ws_url}/?token={forged}").response.status_code == 401
