"""Upstream adapters, one module per wire format: ``openai`` (managed APIs, Bastion's workers,
vLLM/TGI) and ``ubiai``; the part they share (targets, picking, retries, breaker, bounds) is
``_pool``, and httpx2's errors are translated in ``_errors``."""

from gateway.upstreams._errors import UpstreamRefused
from gateway.upstreams.base import Endpoint, Upstream, UpstreamReply, UpstreamStream
from gateway.upstreams.openai import OpenAIUpstream
from gateway.upstreams.ubiai import UbiAIUpstream

__all__ = [
    "Endpoint",
    "OpenAIUpstream",
    "UbiAIUpstream",
    "Upstream",
    "UpstreamRefused",
    "UpstreamReply",
    "UpstreamStream",
]
