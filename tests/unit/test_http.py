"""Turning error answers into imgtools errors: the server's words, no markup, the right class."""

import httpx
import pytest

from imgtools import APIError, AuthError, NotFound, RateLimited
from imgtools._http import error_message, raise_for_status, retry_after_seconds


def _response(status: int, **kwargs: object) -> httpx.Response:
    request = httpx.Request("GET", "http://svc.test/v2/tasks/x?token=abc")
    return httpx.Response(status, request=request, **kwargs)  # type: ignore[arg-type]


def test_glance_json_message_loses_its_markup() -> None:
    body = {"message": "Invalid status value: bogus<br /><br />\n\n\n", "code": "400 Bad Request",
            "title": "Bad Request"}
    assert error_message(_response(400, json=body)) == "Invalid status value: bogus"


def test_swift_html_page() -> None:
    page = "<html><h1>Not Found</h1><p>The resource could not be found.</p></html>"
    response = _response(404, text=page, headers={"content-type": "text/html"})
    assert error_message(response) == "Not Found The resource could not be found."


def test_identity_style_nested_message() -> None:
    body = {"unauthorized": {"code": 401, "message": "Username or api key is invalid."}}
    assert error_message(_response(401, json=body)) == "Username or api key is invalid."


@pytest.mark.parametrize(("status", "kind"), [(401, AuthError), (403, AuthError),
                                              (404, NotFound), (413, RateLimited),
                                              (429, RateLimited), (500, APIError)])
def test_status_to_class(status: int, kind: type[APIError]) -> None:
    with pytest.raises(kind) as caught:
        raise_for_status(_response(status, text="nope", headers={"retry-after": "7"}))
    error = caught.value
    assert type(error) is kind
    assert error.status_code == status
    assert "token=abc" not in str(error) and "svc.test" not in str(error)  # path only
    assert "/v2/tasks/x" in str(error)
    if isinstance(error, RateLimited):
        assert error.retry_after == 7.0


def test_success_passes_through() -> None:
    response = _response(204)
    assert raise_for_status(response) is response


def test_retry_after_forms() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("-5") == 0.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 10) == 10.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_secrets_are_blanked_from_echoed_messages() -> None:
    body = {"message": "bad request for apiKey=s3cr3t-key and token tok-123"}
    with pytest.raises(APIError) as caught:
        raise_for_status(_response(400, json=body), redact=("s3cr3t-key", "tok-123", ""))
    assert "s3cr3t-key" not in str(caught.value) and "tok-123" not in str(caught.value)
    assert "apiKey=********" in caught.value.message
