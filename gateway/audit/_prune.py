"""Retention: ``prune_store`` deletes old records and keeps the remainder verifiable.

Before cutting, the whole trail is verified (a prune never launders a tampered prefix). The cut
is a signed checkpoint at the last pruned seq, the *prune anchor*: the verifier starts the chain
from its hash instead of the genesis. The prune itself is then recorded in the trail.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.audit._chain import Entry
from gateway.audit._checkpoint import sign_checkpoint, verifier_key
from gateway.audit._errors import AuditIntegrityError
from gateway.audit._records import canonical_data, new_record_id, rfc3339_now
from gateway.audit._store import Store
from gateway.audit._verify import verify_store
from pki.signing import Signer

__all__ = ["PruneResult", "prune_store"]


@dataclass(frozen=True, slots=True)
class PruneResult:
    through_seq: int  # last seq removed (0: nothing to prune)
    removed: int
    record_id: str | None  # the "prune" record written to the trail


def prune_store(store: Store, signer: Signer, *, before: str) -> PruneResult:
    """Remove records whose time is before ``before`` (RFC 3339 UTC)."""
    pem = signer.public_key_pem()
    store.register_key(verifier_key(store.origin, pem))
    report = verify_store(store, public_keys=[pem])
    if not report.ok:
        raise AuditIntegrityError(
            f"refusing to prune {store.location}: the trail does not verify "
            f"({report.problems[0].message}); investigate with `bastion audit verify`"
        )
    through = store.last_seq_before(before)
    if through < report.first_seq:
        return PruneResult(0, 0, None)
    anchor_hash = next(store.records(after_seq=through - 1)).hash
    now = rfc3339_now()
    note = sign_checkpoint(
        signer, origin=store.origin, size=through, head=anchor_hash, time=now, reason="prune"
    )
    removed = store.prune(through, now, note)
    data = canonical_data(
        {"before": before, "through_seq": through, "removed": removed}, limit=4096
    )
    record_id = new_record_id("prune")
    sealed = store.append([Entry(record_id, "prune", data)])
    head = sealed[-1]
    now = rfc3339_now()
    store.add_checkpoint(
        head.seq,
        now,
        sign_checkpoint(
            signer, origin=store.origin, size=head.seq, head=head.hash, time=now, reason="prune"
        ),
    )
    return PruneResult(through, removed, record_id)
