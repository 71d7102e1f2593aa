"""Upstream adapters, one module per wire format: ``openai`` (managed APIs, Bastion's workers,
vLLM/TGI) and ``ubiai``."""

from gateway.upstreams.base import Endpoint, Upstream, UpstreamReply
from gateway.upstreams.openai import OpenAIUpstream
from gateway.upstreams.ubiai import UbiAIUpstream

__all__ = ["Endpoint", "OpenAIUpstream", "UbiAIUpstream", "Upstream", "UpstreamReply"]
