"""Authorization: which identities may call which model aliases (globs, from config).

Globs mean what they mean in the policy (:func:`gateway.policy.glob_match`): ``*`` stops at
``/``, ``**`` crosses it. So ``spiffe://corp/svc/*`` authorizes ``svc/billing``, never
``svc/team/deep/x``: one meaning for identities and models everywhere (authorization, rate
limits, policy rules). Error messages name the field, never the value the caller sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gateway.config import AuthorizationRule, ModelConfig
from gateway.errors import NotFound, PermissionDenied
from gateway.policy import glob_match
from pki.identity import Identity

__all__ = ["Authorizer"]


class Authorizer:
    def __init__(
        self, rules: Sequence[AuthorizationRule], models: Mapping[str, ModelConfig]
    ) -> None:
        self._rules = tuple(rules)
        self._models = models

    def allowed_models(self, identity: Identity) -> list[str]:
        """The aliases this identity may use (what ``GET /v1/models`` lists)."""
        return [alias for alias in self._models if self._permits(identity, alias)]

    def names(self, identity: Identity) -> bool:
        """Whether any authorization rule names this identity (else even listing is refused)."""
        return any(
            glob_match(identity.spiffe_id, (rule.identity,)) is not None for rule in self._rules
        )

    def _permits(self, identity: Identity, alias: str) -> bool:
        return any(
            glob_match(identity.spiffe_id, (rule.identity,)) is not None
            and glob_match(alias, tuple(rule.models)) is not None
            for rule in self._rules
        )

    def check_listing(self, identity: Identity) -> None:
        """``GET /v1/models``: 403 for an identity that no rule names, like the POST."""
        if not self.names(identity):
            raise PermissionDenied(
                f"identity {identity.spiffe_id} is not authorized for any model",
                code="identity_not_authorized",
            )

    def check(self, identity: Identity, alias: str) -> None:
        if alias not in self._models:
            raise NotFound(
                "the model named in 'model' does not exist; GET /v1/models lists the models "
                "you may use",
                param="model",
                code="model_not_found",
            )
        if not self._permits(identity, alias):
            raise PermissionDenied(
                f"identity {identity.spiffe_id} may not use the model named in 'model'",
                param="model",
                code="model_not_permitted",
            )
