"""One glob meaning (the policy's) for identities and models in authorization and rate limits."""

from __future__ import annotations

import pytest

from gateway.authz import Authorizer
from gateway.config import AuthorizationRule, ModelConfig, RateLimitRule
from gateway.errors import NotFound, PermissionDenied, RateLimited
from gateway.policy import glob_match
from gateway.ratelimit import RateLimiter
from pki.identity import Identity

DOMAIN = "spiffe://bastion.internal/"

# (identity path, identity glob, should match). Each row is also checked against the policy's
# own glob, so authorization, rate limits and policy rules cannot drift apart.
GLOBS = [
    ("svc/billing", "svc/*", True),
    ("svc/team/deep/x", "svc/*", False),  # fnmatch's `*` crosses `/`: it said yes
    ("svc/team/deep/x", "svc/**", True),
    ("svc/b", "svc/?", True),
    ("svc/a/b", "svc/?/b", True),
    ("svc//b", "svc/?/b", False),  # `?` is one character, never `/`
    ("svc/Billing", "svc/billing", False),  # case-sensitive
    ("svc/billing", "svc/[b]illing", False),  # no character classes: `[` is literal
]
GLOB_IDS = [f"{path}~{glob}" for path, glob, _ in GLOBS]


def _identity(path: str) -> Identity:
    return Identity(
        spiffe_id=DOMAIN + path, trust_domain="bastion.internal", path=path, serial_hex="01"
    )


def _authorizer(identity_glob: str, model_globs: list[str]) -> Authorizer:
    models = {name: ModelConfig(upstream="local") for name in ("chat", "team/chat", "team/a/b")}
    return Authorizer([AuthorizationRule(identity=identity_glob, models=model_globs)], models)


@pytest.mark.parametrize(("path", "pattern", "expected"), GLOBS, ids=GLOB_IDS)
def test_authorization_identity_globs_mean_what_the_policy_means(
    path: str, pattern: str, expected: bool
) -> None:
    """An identity is authorized exactly when the policy's glob matches it."""
    authorizer = _authorizer(DOMAIN + pattern, ["chat"])
    assert (glob_match(DOMAIN + path, (DOMAIN + pattern,)) is not None) is expected
    assert (authorizer.allowed_models(_identity(path)) == ["chat"]) is expected
    assert authorizer.names(_identity(path)) is expected


@pytest.mark.parametrize(
    ("model_glob", "allowed"),
    [
        ("*", ["chat"]),  # `*` does not cross `/` in aliases either
        ("team/*", ["team/chat"]),
        ("team/**", ["team/chat", "team/a/b"]),
        ("**", ["chat", "team/chat", "team/a/b"]),
    ],
    ids=["star", "team-star", "team-doublestar", "doublestar"],
)
def test_authorization_model_globs_mean_what_the_policy_means(
    model_glob: str, allowed: list[str]
) -> None:
    """Model alias globs use the policy's meaning too."""
    authorizer = _authorizer(DOMAIN + "svc/*", [model_glob])
    assert authorizer.allowed_models(_identity("svc/billing")) == allowed


@pytest.mark.parametrize(("path", "pattern", "expected"), GLOBS, ids=GLOB_IDS)
def test_rate_limit_globs_mean_what_the_policy_means(
    path: str, pattern: str, expected: bool
) -> None:
    """A rate-limit rule applies exactly to the identities the policy's glob matches."""
    limiter = RateLimiter([RateLimitRule(identity=DOMAIN + pattern, requests_per_minute=1)])
    limiter.check(DOMAIN + path, 1)
    if expected:
        with pytest.raises(RateLimited):
            limiter.check(DOMAIN + path, 1)
    else:
        limiter.check(DOMAIN + path, 1)  # no rule applies: never limited


def test_unknown_and_forbidden_models_do_not_echo_the_value() -> None:
    """The 404/403 for a model names the field, never the value the caller sent."""
    sent = "078-05-1120"
    authorizer = _authorizer(DOMAIN + "svc/*", ["chat"])
    with pytest.raises(NotFound) as missing:
        authorizer.check(_identity("svc/billing"), sent)
    assert missing.value.param == "model"
    assert sent not in missing.value.message
    authorizer = Authorizer(
        [AuthorizationRule(identity=DOMAIN + "svc/*", models=["chat"])],
        {sent: ModelConfig(upstream="local"), "chat": ModelConfig(upstream="local")},
    )
    with pytest.raises(PermissionDenied) as forbidden:
        authorizer.check(_identity("svc/billing"), sent)
    assert sent not in forbidden.value.message


def test_listing_is_refused_to_an_identity_no_rule_names() -> None:
    """GET /v1/models' check: 403 for an identity that no authorization rule names."""
    authorizer = _authorizer(DOMAIN + "svc/*", ["chat"])
    authorizer.check_listing(_identity("svc/billing"))
    with pytest.raises(PermissionDenied):
        authorizer.check_listing(_identity("other/billing"))
