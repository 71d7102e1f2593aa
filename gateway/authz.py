"""Authorization: which identities may call which model aliases (globs, from config)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

from gateway.config import AuthorizationRule, ModelConfig
from gateway.errors import NotFound, PermissionDenied
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

    def _permits(self, identity: Identity, alias: str) -> bool:
        return any(
            fnmatchcase(identity.spiffe_id, rule.identity)
            and any(fnmatchcase(alias, pattern) for pattern in rule.models)
            for rule in self._rules
        )

    def check(self, identity: Identity, alias: str) -> None:
        if alias not in self._models:
            raise NotFound(
                f"the model '{alias}' does not exist; GET /v1/models lists the models you may use",
                param="model",
                code="model_not_found",
            )
        if not self._permits(identity, alias):
            raise PermissionDenied(
                f"identity {identity.spiffe_id} may not use model '{alias}'",
                param="model",
                code="model_not_permitted",
            )
