"""auth: registration, login and the tokens it issues."""

from __future__ import annotations

from collections.abc import Callable

import jwt
import pytest

from .conftest import Client, User, login

pytestmark = pytest.mark.services("auth")


def test_token_is_issued_and_validated_by_auth(auth: Client, user: User, stack_file: dict) -> None:
    body = auth.post("/login", {"username": user.username, "password": user.password}).expect(200)
    assert body["token_type"] == "bearer"
    settings = stack_file["services"]["auth"]["environment"]
    assert body["expires_in"] == int(settings["TOKEN_TTL"])

    # A real HS256 JWT of auth's secret and issuer, about this user
    claims = jwt.decode(
        body["access_token"], settings["JWT_SECRET"], algorithms=["HS256"], issuer=settings["JWT_ISSUER"]
    )
    assert claims["sub"] == user.username
    assert claims["exp"] - claims["iat"] == int(settings["TOKEN_TTL"])

    assert auth.get("/me", token=body["access_token"]).expect(200) == {"username": user.username}


def test_each_user_gets_their_own_identity(auth: Client, new_user: Callable[[], User]) -> None:
    alice, bob = new_user(), new_user()
    assert auth.get("/me", token=login(auth, alice)).expect(200) == {"username": alice.username}
    assert auth.get("/me", token=login(auth, bob)).expect(200) == {"username": bob.username}


def test_wrong_password_is_refused(auth: Client, user: User) -> None:
    answer = auth.post("/login", {"username": user.username, "password": user.password + "x"})
    answer.expect(401)
    assert "access_token" not in answer.body
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


def test_unknown_user_is_refused_like_a_wrong_password(auth: Client, user: User) -> None:
    wrong_password = auth.post("/login", {"username": user.username, "password": "not-it"})
    unknown_user = auth.post("/login", {"username": user.username + "-nobody", "password": "not-it"})
    unknown_user.expect(401)
    assert unknown_user.body == wrong_password.body  # no hint about which usernames exist


def test_duplicate_username_is_refused(auth: Client, user: User) -> None:
    answer = auth.post("/users", {"username": user.username, "password": "another password"})
    answer.expect(409)
    assert user.username in answer.error
    # the first registration is untouched: its password still logs in
    assert login(auth, user)


@pytest.mark.parametrize(
    "body",
    [{}, {"username": "", "password": "pw"}, {"username": "someone", "password": ""}, ["not", "an object"]],
)
def test_malformed_registration_is_a_bad_request(auth: Client, body: object) -> None:
    auth.post("/users", body).expect(400)
