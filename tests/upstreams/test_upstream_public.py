"""The upstreams package's public surface is pinned (as httpx pins its ``__all__``): the pipeline
codes against these names; everything else is private (``_pool``, ``_stream``, ...)."""

from __future__ import annotations

import gateway.upstreams
import gateway.upstreams.base


def test_public_names_are_pinned() -> None:
    """Adding or removing a public name is a decision, made here."""
    assert sorted(gateway.upstreams.__all__) == [
        "Endpoint",
        "OpenAIUpstream",
        "UbiAIUpstream",
        "Upstream",
        "UpstreamRefused",
        "UpstreamReply",
        "UpstreamStream",
    ]
    assert sorted(gateway.upstreams.base.__all__) == [
        "Endpoint",
        "Upstream",
        "UpstreamReply",
        "UpstreamStream",
    ]
    for name in gateway.upstreams.__all__:
        assert getattr(gateway.upstreams, name) is not None
