"""One table at the HTTP boundary: every error class of the gateway and of pki becomes a known
OpenAI-shaped answer, and a domain error's own message never reaches the caller."""

from __future__ import annotations

import importlib
import json
import pkgutil

import pytest

import gateway
import pki
from gateway.api.errors import BOUNDARY, as_api_error, error_response
from gateway.errors import GatewayError
from pki.errors import BastionError

# The CLI prints its errors (exit 1); they never reach HTTP.
_NOT_AT_THE_BOUNDARY = ("gateway.cli", "gateway.__main__")


def _all_error_classes() -> list[type[BastionError]]:
    for package in (gateway, pki):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not info.name.startswith(_NOT_AT_THE_BOUNDARY):
                importlib.import_module(info.name)  # the test's own discovery, not product code
    found: list[type[BastionError]] = []
    pending = [BastionError]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            pending.append(sub)
            if sub.__module__.startswith(("gateway.", "pki.")) and not sub.__module__.startswith(
                _NOT_AT_THE_BOUNDARY
            ):
                found.append(sub)
    return sorted(set(found), key=lambda c: f"{c.__module__}.{c.__qualname__}")


def _explicit_status(cls: type[BastionError]) -> str | None:
    """The row or the class that gives ``cls`` its status, or None when only a root would."""
    for klass in cls.__mro__:
        if klass in BOUNDARY:
            return f"table row {klass.__name__}"
        if "status_code" in vars(klass) and (klass is cls or klass is not GatewayError):
            return f"{klass.__name__}.status_code"
        if klass is GatewayError or klass is BastionError:
            return None
    return None


ERRORS = _all_error_classes()


def test_the_tree_was_walked() -> None:
    """Discovery found the packages' roots, so the next test covers the real tree."""
    names = {cls.__name__ for cls in ERRORS}
    assert {"AuditError", "PolicyError", "DetectError", "HSMError", "SecretStoreError"} <= names


@pytest.mark.parametrize("cls", ERRORS, ids=[c.__qualname__ for c in ERRORS])
def test_every_error_class_has_a_status(cls: type[BastionError]) -> None:
    """Each error class is answered by an explicit table row or its own declared status, never
    by falling through to a root's default."""
    assert _explicit_status(cls) is not None


@pytest.mark.parametrize(
    ("domain_error", "row"), list(BOUNDARY.items()), ids=[c.__name__ for c in BOUNDARY]
)
def test_a_domain_error_is_answered_from_its_row(
    domain_error: type[BastionError], row: object
) -> None:
    """The answer has the row's status and code in the OpenAI shape, and the table's message:
    the domain message (which may name a file or key) is not in the body."""
    exc = domain_error.__new__(domain_error)
    BastionError.__init__(exc, "/srv/bastion/secret-path.key is unreadable")
    response = error_response(exc)
    body = json.loads(bytes(response.body))
    api = as_api_error(exc)
    assert response.status_code == api.status_code >= 500
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == BOUNDARY[domain_error].code
    assert "secret-path" not in response.body.decode()
    assert "nothing was forwarded" in body["error"]["message"]


def test_an_api_error_keeps_its_own_answer() -> None:
    """The API's own errors (400 naming the field) pass through unchanged."""
    from gateway.errors import InvalidRequest

    exc = InvalidRequest("messages[0].role: unknown role", param="messages[0].role")
    body = json.loads(bytes(error_response(exc).body))
    assert error_response(exc).status_code == 400
    assert body["error"]["param"] == "messages[0].role"
    assert as_api_error(exc) is exc


def test_an_unmapped_error_fails_safe() -> None:
    """An error class added later without a row is a generic 500, its message withheld."""

    class NewError(BastionError):
        pass

    response = error_response(NewError("token=abc123"))
    assert response.status_code == 500
    assert "abc123" not in response.body.decode()
