"""One vocabulary: the route kind and the endpoint are each one type, shared by the config, the
policy, the adapters and the app."""

from __future__ import annotations

import pytest

from gateway.config import UpstreamConfig
from gateway.policy import Action, RouteKind
from gateway.upstreams.base import Endpoint as AdapterEndpoint
from gateway.vocabulary import Endpoint
from gateway.vocabulary import RouteKind as SharedRouteKind


def test_one_route_kind_everywhere() -> None:
    """The policy's RouteKind, the config's upstream kind and the adapters' are the same type."""
    assert RouteKind is SharedRouteKind
    upstream = UpstreamConfig(kind="managed", base_url="https://api.example/v1")
    assert upstream.kind is RouteKind.MANAGED
    assert AdapterEndpoint is Endpoint


@pytest.mark.parametrize("kind", list(RouteKind), ids=[k.value for k in RouteKind])
def test_each_route_kind_is_an_action(kind: RouteKind) -> None:
    """Routing to a kind is the action of that name; deny is the one action that is no kind."""
    assert Action(kind).value == kind.value
    assert {a.value for a in Action} - {k.value for k in RouteKind} == {"deny"}


@pytest.mark.parametrize(
    ("endpoint", "path"),
    [(Endpoint.CHAT, "/v1/chat/completions"), (Endpoint.COMPLETIONS, "/v1/completions")],
    ids=["chat", "completions"],
)
def test_an_endpoint_knows_its_path(endpoint: Endpoint, path: str) -> None:
    """The caller's path and the way back from it; any other path is no endpoint."""
    assert endpoint.path == path
    assert Endpoint.from_path(path) is endpoint
    assert Endpoint.from_path(path + "/") is None
