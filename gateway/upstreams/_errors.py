"""httpx2's exceptions translated into the gateway's, at this one boundary.

    UpstreamError (gateway.errors)        502 upstream_failed, unless a ``code`` below says more
     ├── UpstreamTimeout                  504: a per-operation timeout or the call's deadline
     └── UpstreamRefused                  502: a 401/403/404 (our key or the model name is wrong);
                                          the upstream is healthy, so the breaker is not fed
    InvalidRequest (gateway.errors)       400 upstream_invalid_request: another 4xx
    RateLimited (gateway.errors)          429 upstream_busy: every target answered 429/503

Every ``httpx2`` exception class has a row in ``_TRANSLATIONS`` (proved by a test that walks the
class tree, as ``translate_pkcs11``'s test does for PKCS#11). Messages name the upstream by its
configured name and the exception by its type: never the exception's own text, which carries
the URL (a UbiAI URL holds its token) and sometimes bytes of the answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx2

from gateway.errors import UpstreamError, UpstreamTimeout

__all__ = ["UpstreamRefused", "map_transport_errors"]


class UpstreamRefused(UpstreamError):
    """The upstream answered 401, 403 or 404: it is up, but will not serve this gateway (its key,
    or the model name in ``model_map``). The caller cannot fix it, hence 502; the breaker is not
    fed, as the upstream is healthy."""


# Most specific first; the first row whose class matches wins.
_TRANSLATIONS: tuple[tuple[type[Exception], type[UpstreamError], str], ...] = (
    # ConnectTimeout, ReadTimeout, WriteTimeout, PoolTimeout
    (httpx2.TimeoutException, UpstreamTimeout, "timed out"),
    (httpx2.ConnectError, UpstreamError, "could not be reached"),
    # ReadError, WriteError, CloseError: the connection broke mid-way
    (httpx2.NetworkError, UpstreamError, "dropped the connection"),
    # Raised by httpx2.EventSource: wrong content type, or an event over max_sse_event_bytes
    (httpx2.SSEError, UpstreamError, "sent a malformed event stream"),
    # A stream cut without its chunked terminator, malformed HTTP
    (httpx2.RemoteProtocolError, UpstreamError, "broke the HTTP protocol"),
    (httpx2.LocalProtocolError, UpstreamError, "could not be sent a valid HTTP request"),
    (httpx2.ProxyError, UpstreamError, "could not be reached through the proxy"),
    (httpx2.UnsupportedProtocol, UpstreamError, "has a URL scheme httpx2 cannot use"),
    (httpx2.TransportError, UpstreamError, "failed at the transport level"),
    # A body that does not decode as its content-encoding claims (broken gzip, ...)
    (httpx2.DecodingError, UpstreamError, "sent a body its content-encoding cannot decode"),
    (httpx2.TooManyRedirects, UpstreamError, "redirected too many times"),
    (httpx2.RequestError, UpstreamError, "request failed"),
    (httpx2.HTTPStatusError, UpstreamError, "answered an error status"),
    (httpx2.HTTPError, UpstreamError, "failed"),
    (httpx2.InvalidURL, UpstreamError, "has an invalid URL (check base_url)"),
    (httpx2.CookieConflict, UpstreamError, "sent conflicting cookies"),
    # StreamConsumed, StreamClosed, ResponseNotRead, RequestNotRead: a bug on our side, but the
    # call failed all the same; the caller gets a 502, not a 500 with a traceback.
    (httpx2.StreamError, UpstreamError, "answer could not be read (stream misuse)"),
)

HTTPX2_ERRORS: tuple[type[Exception], ...] = tuple(row[0] for row in _TRANSLATIONS)


def translate(name: str, exc: Exception) -> UpstreamError:
    """The gateway error for one httpx2 exception (a plain UpstreamError for anything else)."""
    for httpx2_type, error_type, what in _TRANSLATIONS:
        if isinstance(exc, httpx2_type):
            return error_type(f"upstream '{name}' {what} ({type(exc).__name__})")
    return UpstreamError(f"upstream '{name}' failed ({type(exc).__name__})")


@contextmanager
def map_transport_errors(name: str) -> Iterator[None]:
    """Translate httpx2 exceptions raised inside into gateway errors (the cause suppressed, so
    no URL reaches a traceback). The circuit breaker is fed by the caller's lease, not here."""
    try:
        yield
    except HTTPX2_ERRORS as exc:
        raise translate(name, exc) from None
