"""Both auth (GET /me) and the api (GET /notes) check tokens: each refusal is tested on both.

Every refusal test first shows that a token differing only in the one point under test is
accepted, so a 401 cannot come from something else (a wrong secret, an unknown user).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .conftest import WRONG_SECRET, Client, User

pytestmark = pytest.mark.services("auth", "api")

# (service, a route that needs a token)
CHECKERS = [pytest.param("auth", "/me", id="auth"), pytest.param("api", "/notes", id="api")]


@pytest.fixture
def client(request: pytest.FixtureRequest, service: str) -> Client:
    return request.getfixturevalue(service)  # the `auth` or `api` fixture


def test_api_accepts_the_token_auth_issued(api: Client, token: str, user: User) -> None:
    created = api.post("/notes", {"text": "signed by auth"}, token=token).expect(201)
    assert created["owner"] == user.username


@pytest.mark.parametrize(("service", "route"), CHECKERS)
def test_expired_token_is_refused(
    client: Client, route: str, user: User, make_token: Callable[..., str]
) -> None:
    client.get(route, token=make_token(user.username)).expect(200)
    expired = make_token(user.username, iat=-360, exp=-60)
    answer = client.get(route, token=expired)
    answer.expect(401)
    assert "expired" in answer.error


@pytest.mark.parametrize(("service", "route"), CHECKERS)
def test_tampered_token_is_refused(
    client: Client, route: str, token: str, new_user: Callable[[], User], make_token: Callable[..., str]
) -> None:
    client.get(route, token=token).expect(200)
    header, payload, signature = token.split(".")

    # one character of the signature changed
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    answer = client.get(route, token=f"{header}.{payload}.{flipped}")
    answer.expect(401)
    assert "signature" in answer.error.lower()

    # the claims swapped for someone else's (valid in themselves), the signature kept
    someone_elses_claims = make_token(new_user().username).split(".")[1]
    assert someone_elses_claims != payload
    answer = client.get(route, token=f"{header}.{someone_elses_claims}.{signature}")
    answer.expect(401)
    assert "signature" in answer.error.lower()


@pytest.mark.parametrize(("service", "route"), CHECKERS)
def test_token_of_another_issuer_is_refused(
    client: Client, route: str, user: User, make_token: Callable[..., str]
) -> None:
    client.get(route, token=make_token(user.username)).expect(200)
    answer = client.get(route, token=make_token(user.username, iss="someone-else"))
    answer.expect(401)
    assert "issuer" in answer.error


@pytest.mark.parametrize(("service", "route"), CHECKERS)
def test_token_signed_with_another_secret_is_refused(
    client: Client, route: str, user: User, make_token: Callable[..., str]
) -> None:
    client.get(route, token=make_token(user.username)).expect(200)
    client.get(route, token=make_token(user.username, secret=WRONG_SECRET)).expect(401)


@pytest.mark.parametrize(("service", "route"), CHECKERS)
def test_missing_token_is_refused(client: Client, route: str) -> None:
    answer = client.get(route)
    answer.expect(401)
    assert "missing" in answer.error
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
