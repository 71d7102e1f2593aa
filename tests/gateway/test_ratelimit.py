"""The per-identity rate limiter on its own: token buckets, first matching rule, glob meaning,
the request slot given back when the token budget refuses. The clock is the test's."""

from __future__ import annotations

import pytest

from gateway import ratelimit
from gateway.config import RateLimitRule
from gateway.errors import RateLimited
from gateway.ratelimit import RateLimiter, estimate_tokens

BILLING = "spiffe://bastion.internal/svc/billing"
CLAIMS = "spiffe://bastion.internal/svc/claims"
NESTED = "spiffe://bastion.internal/svc/team/batch"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(ratelimit.time, "monotonic", clock)
    return clock


def _rule(identity: str = "spiffe://bastion.internal/svc/*", **limits: int) -> RateLimitRule:
    return RateLimitRule(identity=identity, **limits)


def _admitted(limiter: RateLimiter, identity: str, tokens: int = 10) -> bool:
    try:
        limiter.check(identity, tokens)
    except RateLimited:
        return False
    return True


def test_requests_per_minute_refill_continuously(clock: Clock) -> None:
    """rpm=2: two admitted, the third refused with Retry-After of the refill time; after that
    time one more is admitted (the bucket refills at rpm/60 per second)."""
    limiter = RateLimiter([_rule(requests_per_minute=2)])
    assert [_admitted(limiter, BILLING) for _ in range(2)] == [True, True]
    with pytest.raises(RateLimited) as refused:
        limiter.check(BILLING, 10)
    assert refused.value.retry_after == pytest.approx(30.0)
    assert refused.value.status_code == 429
    clock.now += 29.0
    assert not _admitted(limiter, BILLING)
    clock.now += 1.0
    assert _admitted(limiter, BILLING)


def test_a_token_refusal_gives_the_request_slot_back(clock: Clock) -> None:
    """rpm=2, tpm=1000: a request refused for tokens does not use up a request slot, so a
    small request right after it is still admitted."""
    limiter = RateLimiter([_rule(requests_per_minute=2, tokens_per_minute=1000)])
    assert _admitted(limiter, BILLING, 600)
    assert not _admitted(limiter, BILLING, 600)
    assert _admitted(limiter, BILLING, 100)
    assert not _admitted(limiter, BILLING, 1)  # both request slots are now used


def test_a_request_larger_than_the_budget_is_refused_for_good(clock: Clock) -> None:
    """A request estimated above tokens_per_minute can never fit: refused without Retry-After,
    and the message says to lower max_tokens."""
    limiter = RateLimiter([_rule(tokens_per_minute=500)])
    with pytest.raises(RateLimited, match="alone exceeds the limit of 500 tokens/min") as refused:
        limiter.check(BILLING, 501)
    assert refused.value.retry_after is None


# (id, rules, identity, requests admitted out of 3)
MATCHING = [
    ("first-rule-wins", [_rule(BILLING, requests_per_minute=1), _rule(requests_per_minute=100)], BILLING, 1),
    ("next-rule-for-others", [_rule(BILLING, requests_per_minute=1), _rule(requests_per_minute=2)], CLAIMS, 2),
    ("star-stops-at-slash", [_rule(requests_per_minute=1)], NESTED, 3),
    ("double-star-crosses", [_rule("spiffe://bastion.internal/**", requests_per_minute=1)], NESTED, 1),
    ("no-rule-no-limit", [], BILLING, 3),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rules", "identity", "admitted"),
    [c[1:] for c in MATCHING],
    ids=[c[0] for c in MATCHING],
)
def test_the_first_matching_rule_applies(
    clock: Clock, rules: list[RateLimitRule], identity: str, admitted: int
) -> None:
    """Rules are tried in order with the policy's glob meaning; an identity no rule names is
    not limited."""
    limiter = RateLimiter(rules)
    assert sum(_admitted(limiter, identity) for _ in range(3)) == admitted


def test_each_identity_has_its_own_bucket(clock: Clock) -> None:
    """Two identities under one rule do not share a budget."""
    limiter = RateLimiter([_rule(requests_per_minute=1)])
    assert _admitted(limiter, BILLING)
    assert not _admitted(limiter, BILLING)
    assert _admitted(limiter, CLAIMS)


@pytest.mark.parametrize(
    ("chars", "max_tokens", "expected"),
    [(0, None, 256), (4000, None, 1256), (4000, 50, 1050), (3, 1, 1)],
    ids=["empty-default", "text-default", "text-max-tokens", "rounds-down"],
)
def test_token_estimate(chars: int, max_tokens: int | None, expected: int) -> None:
    """Admission estimates prompt characters / 4 plus max_tokens (256 when absent)."""
    assert estimate_tokens(chars, max_tokens) == expected
