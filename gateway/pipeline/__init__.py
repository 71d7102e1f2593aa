"""The request path of a completion call, in one place:

    identify → parse (bounded JSON, strict typed request, texts extracted once) → authorize
    → rate-limit → detect + decide (router) → refuse binary on managed → sanitize + egress scan
    of the exact outgoing bytes → audit (write-ahead) → deny | forward (→ on-prem fallback)
    → restore → record

One object, :class:`RequestContext`, carries the call through the steps (identity, typed
request, texts, decision, outgoing body, restorer, decision id). Each step is a small function
(:mod:`gateway.pipeline._steps`, :mod:`gateway.pipeline._forward`);
:func:`handle_completion` (:mod:`gateway.pipeline._chain`) runs them in order. The fail-closed
rules are written once, in ``_steps``' docstring and code.

Pluggable parts: the :class:`Router` (detection + policy, :mod:`gateway.routing`), the
:class:`AuditSink` (:mod:`gateway.auditing`), the :class:`Restorer` of a sanitized route.
"""

from __future__ import annotations

from gateway.api.body import read_json_body
from gateway.pipeline._chain import handle_completion
from gateway.pipeline._context import (
    AuditSink,
    NullRestorer,
    RequestContext,
    Restorer,
    RoutedRequest,
    Router,
)
from gateway.pipeline._forward import stream_events
from gateway.pipeline._steps import identify

__all__ = [
    "AuditSink",
    "NullRestorer",
    "RequestContext",
    "Restorer",
    "RoutedRequest",
    "Router",
    "handle_completion",
    "identify",
    "read_json_body",
    "stream_events",
]
