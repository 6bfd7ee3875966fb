"""The login operations of ``IdentityAuth``, fed canned identity answers (no sockets): when a
token is renewed is decided once, in ``op_token``, for the blocking and the awaited driver."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from imgtools import AuthError
from imgtools._auth import Credentials, IdentityAuth, Secret, Session
from imgtools._ops import Send, arun, run
from imgtools._transport import Stats

CREDS = Credentials("identity", "arguments", username="u", api_key=Secret("k3y-s3cret"),
                    identity_url="http://127.0.0.1:9/v2.0")


class Identity:
    """Answers every login with a new token: ``tok-1``, ``tok-2``, ..."""

    def __init__(self) -> None:
        self.logins = 0

    def answer(self, step: Send) -> httpx.Response:
        assert step.request.url.path == "/v2.0/tokens"
        self.logins += 1
        catalog = [{"type": "image", "name": "cloudImages",
                    "endpoints": [{"region": "ORD", "publicURL": "http://127.0.0.1:9/v2"}]}]
        body: dict[str, Any] = {"access": {"token": {"id": f"tok-{self.logins}"},
                                           "serviceCatalog": catalog}}
        return httpx.Response(200, json=body, request=step.request)

    async def aanswer(self, step: Send) -> httpx.Response:
        return self.answer(step)


def auth_with(session: Session | None) -> IdentityAuth:
    return IdentityAuth(CREDS, stats=Stats(), session=session)


def fresh(token: str = "tok-0", *, refresh_in: float | None = 3600.0) -> Session:
    at = None if refresh_in is None else time.monotonic() + refresh_in
    return Session(token=Secret(token), refresh_at=at)


def test_no_session_logs_in() -> None:
    identity, auth = Identity(), auth_with(None)
    assert run(auth.op_token(), identity.answer) == "tok-1"
    assert identity.logins == 1 and auth.stats.reauths == 0  # the first login is no re-login


@pytest.mark.parametrize("refresh_in", [3600.0, None])
def test_a_current_token_is_used_without_a_request(refresh_in: float | None) -> None:
    identity, auth = Identity(), auth_with(fresh(refresh_in=refresh_in))
    assert run(auth.op_token(), identity.answer) == "tok-0"
    assert identity.logins == 0


def test_a_token_due_for_renewal_is_renewed() -> None:
    identity, auth = Identity(), auth_with(fresh(refresh_in=-1.0))
    assert run(auth.op_token(), identity.answer) == "tok-1"
    assert identity.logins == 1


def test_a_refused_token_is_renewed_once_and_a_replaced_one_is_not() -> None:
    identity, auth = Identity(), auth_with(fresh("tok-0"))
    auth._count_login()  # the session above came from a first login
    assert run(auth.op_token("tok-0"), identity.answer) == "tok-1"
    # A second caller that was refused the same old token finds it already replaced.
    assert run(auth.op_token("tok-0"), identity.answer) == "tok-1"
    assert identity.logins == 1 and auth.stats.reauths == 1


@pytest.mark.anyio
async def test_the_awaited_driver_decides_alike() -> None:
    identity, auth = Identity(), auth_with(fresh("tok-0"))
    assert await arun(auth.op_token(), identity.aanswer) == "tok-0"
    assert await arun(auth.op_token("tok-0"), identity.aanswer) == "tok-1"
    assert await arun(auth.op_token("tok-0"), identity.aanswer) == "tok-1"
    assert identity.logins == 1


def test_a_refused_login_names_the_user_never_the_key() -> None:
    auth = auth_with(None)

    def refuse(step: Send) -> httpx.Response:
        return httpx.Response(401, json={"unauthorized": {"code": 401}}, request=step.request)

    with pytest.raises(AuthError) as info:
        run(auth.op_login(), refuse)
    assert "'u'" in str(info.value) and "k3y-s3cret" not in str(info.value) + repr(info.value)
    assert auth.session is None
