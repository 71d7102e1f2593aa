"""Every httpx2 exception class becomes a gateway UpstreamError (as translate_pkcs11's test does
for PKCS#11): the class tree is walked, so an httpx2 upgrade that adds one fails here."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest

from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.upstreams._errors import HTTPX2_ERRORS, map_transport_errors

# What an httpx2 exception may carry in its text: a URL with a token, bytes of the answer.
SECRET_TEXT = "https://u:tok-3f9a@upstream.example/v1 PROMPT-078-05-1120"


_NOT_USED = "httpx2.websockets"


def _httpx2_exception_classes() -> list[type[BaseException]]:
    """Every exception class defined in the httpx2 package (all its modules), and every
    subclass of those, except warnings (never raised as errors) and ``httpx2.websockets``
    (Bastion opens no websocket; it needs wsproto, which is not installed)."""
    found: set[type[BaseException]] = set()
    modules = [httpx2] + [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(httpx2.__path__, prefix="httpx2.")
        if not info.name.startswith(_NOT_USED)
    ]
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseException):
                found.add(value)
    pending = list(found)
    while pending:
        for sub in pending.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                pending.append(sub)
    return sorted(
        (
            cls
            for cls in found
            if cls.__module__.startswith("httpx2")
            and not cls.__module__.startswith(_NOT_USED)
            and not issubclass(cls, Warning)
        ),
        key=lambda cls: f"{cls.__module__}.{cls.__qualname__}",
    )


def _instance(cls: type[BaseException]) -> BaseException:
    request = httpx2.Request("POST", "https://upstream.example/v1/chat/completions")
    response = httpx2.Response(500, request=request)
    attempts: tuple[Callable[[], BaseException], ...] = (
        lambda: cls(SECRET_TEXT, request=request, response=response),  # type: ignore[call-arg]
        lambda: cls(SECRET_TEXT, request=request),  # type: ignore[call-arg]
        lambda: cls(SECRET_TEXT),
        lambda: cls(),
    )
    for attempt in attempts:
        try:
            return attempt()
        except TypeError:
            continue
    raise AssertionError(f"cannot build {cls.__qualname__} for the test")


CLASSES = _httpx2_exception_classes()


def test_the_walk_finds_the_whole_tree() -> None:
    """The walk is not vacuous: it finds the roots and the leaves the mapping names."""
    names = {cls.__name__ for cls in CLASSES}
    assert {"HTTPError", "InvalidURL", "StreamError", "DecodingError", "SSEError"} <= names
    assert {"ReadTimeout", "RemoteProtocolError", "StreamConsumed", "CookieConflict"} <= names
    assert len(CLASSES) >= 25


@pytest.mark.parametrize("cls", CLASSES, ids=[cls.__qualname__ for cls in CLASSES])
def test_every_httpx2_exception_is_mapped(cls: type[BaseException]) -> None:
    """No httpx2 exception escapes map_transport_errors: each becomes an UpstreamError (504 for
    timeouts) whose message names the upstream and the exception type, not its text, with the
    cause suppressed so no traceback shows the URL."""
    assert issubclass(cls, HTTPX2_ERRORS), f"{cls.__qualname__} has no row in _TRANSLATIONS"
    with pytest.raises(UpstreamError) as caught, map_transport_errors("managed-x"):
        raise _instance(cls)
    error = caught.value
    expected = UpstreamTimeout if issubclass(cls, httpx2.TimeoutException) else UpstreamError
    assert type(error) is expected
    assert error.status_code == (504 if expected is UpstreamTimeout else 502)
    assert "'managed-x'" in error.message
    assert cls.__name__ in error.message
    assert "tok-3f9a" not in error.message
    assert "PROMPT" not in error.message
    assert "upstream.example" not in error.message
    assert error.__cause__ is None
    assert error.__suppress_context__


def test_adapters_do_not_use_websockets() -> None:
    """The walk may leave httpx2.websockets out only while no upstream module imports it."""
    import gateway.upstreams

    sources = list(Path(gateway.upstreams.__path__[0]).glob("*.py"))
    assert len(sources) >= 5
    for source in sources:
        assert _NOT_USED not in source.read_text(), source.name


def test_decoding_error_names_the_content_encoding() -> None:
    """A broken content-encoding (the issue's raw 500) says what was wrong with the answer."""
    with pytest.raises(UpstreamError, match="content-encoding"), map_transport_errors("m"):
        raise httpx2.DecodingError("Error -3 while decompressing data: incorrect header check")
