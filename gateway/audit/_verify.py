"""``verify_store``: replay the chain, check every checkpoint signature, name the first problem.

What each kind of tampering looks like to the verifier:

* a record's bytes changed, without recomputing hashes: its link ``H(prev || body)`` no longer
  equals its stored hash: that record is named;
* records swapped or moved: the seq inside the signed body disagrees with its position;
* a record removed: a gap in the seqs (or, if the rest was renumbered, a body/position mismatch);
* a record inserted: the next record chains onto the one *before* it;
* a record changed and every later hash recomputed: the chain is consistent, but the first signed
  checkpoint after it does not match. What is provable: the change lies after the last signed
  hash that matches and at or before the first that does not. Checkpoints sign the head and
  *marks* (the chain hash at up to 64 records since the previous checkpoint, every record when
  there were fewer), so the record is named whenever a mark sits just before it (always, at low
  traffic); otherwise the range between two marks is named. Which record changed is provable only against another copy whose
  chain a signed checkpoint vouches for (``reference``: a backup, an earlier copy): the first
  record whose bytes differ from it is named;
* an unsigned copy of a signed value edited: the checkpoint table's ``size`` and ``time`` columns
  must say what the signed note says, and the head row must be the last record's seq, hash, time;
* the tail truncated or rolled back: a checkpoint (stored or pinned by an auditor) covers more
  records than the store holds, or a different hash at its size;
* records appended after the fact: nothing signed covers them, they are reported *uncovered*
  (as is the honest tail a running gateway has written since its last checkpoint).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from gateway.audit._chain import Head, genesis_hash, link
from gateway.audit._checkpoint import (
    Checkpoint,
    CheckpointFormatError,
    VerifierKey,
    parse_checkpoint,
    verifier_key,
)
from gateway.audit._errors import AuditConfigError
from gateway.audit._records import parse_envelope_tail
from gateway.audit._store import Store, StoredRecord

__all__ = ["Problem", "VerifyReport", "verify_store"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One way the trail fails to verify. ``seq`` is the first record concerned, if any."""

    kind: str  # altered | removed | reordered | inserted | truncated | rewritten | signature
    message: str
    seq: int | None = None
    record_id: str | None = None
    through_seq: int | None = None  # "rewritten": the last record of the range concerned


@dataclass(frozen=True, slots=True)
class VerifyReport:
    location: str
    origin: str
    records: int
    first_seq: int  # 0 when empty
    last_seq: int  # 0 when empty
    covered_through: int  # last seq vouched for by a valid, matching checkpoint
    checkpoints: int  # valid checkpoints that match the records
    problems: tuple[Problem, ...]
    warnings: tuple[str, ...]
    first_uncovered_id: str | None = None
    # The keys the checkpoints were checked against ("SHA256:…" fingerprints), and whether they
    # were taken from the store itself (which proves consistency, not authorship).
    key_fingerprints: tuple[str, ...] = ()
    trusted_stored_keys: bool = False

    @property
    def ok(self) -> bool:
        """No record or checkpoint was found altered (uncovered records may remain)."""
        return not self.problems

    @property
    def uncovered(self) -> int:
        return max(0, self.last_seq - max(self.covered_through, self.first_seq - 1))

    @property
    def first_problem(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    def summary(self) -> str:
        lines = [
            f"audit trail {self.location} (origin {self.origin}): {self.records} records"
            + (f", seq {self.first_seq}..{self.last_seq}" if self.records else ""),
            f"signed checkpoints matching the records: {self.checkpoints}; "
            f"covered through seq {self.covered_through}",
        ]
        source = "taken from the store itself" if self.trusted_stored_keys else "pinned"
        lines += [f"checkpoint key ({source}): {fp}" for fp in self.key_fingerprints]
        if self.trusted_stored_keys:
            lines.append(
                "NOT PROVEN: who signed. The keys came from the trail's own key table, which "
                "whoever can write the store can replace (re-chain, add a key, re-sign): this "
                "run proves the trail is self-consistent, not that the gateway's signer wrote "
                "it. Verify with --pubkey (a key kept out of band) or --config to prove that"
            )
        lines += [f"warning: {w}" for w in self.warnings]
        if self.problems:
            lines.append(f"FAILED: {self.problems[0].message}")
            lines += [f"also: {p.message}" for p in self.problems[1:]]
        if self.uncovered:
            lines.append(
                f"NOT YET COVERED: {self.uncovered} record(s) after seq {self.covered_through} "
                f"(first: seq {self.covered_through + 1}, id {self.first_uncovered_id}) are not "
                "covered by a valid signed checkpoint: nothing proves they were not appended "
                "after the fact (a running gateway covers them at its next checkpoint)"
            )
        if not self.problems:
            lines.append(
                "OK: every record chains and every checkpoint signature is valid"
                + (
                    " (under keys from the store: see NOT PROVEN)"
                    if self.trusted_stored_keys
                    else ""
                )
            )
        return "\n".join(lines)


def _name(rec: StoredRecord) -> str:
    return f"record seq {rec.seq} (id {rec.record_id}, {rec.time})"


class _Checker:
    def __init__(self, store: Store, keys: Sequence[VerifierKey], max_problems: int) -> None:
        self.store = store
        self.origin = store.origin
        self.keys = {(k.name, k.key_hash): k for k in keys}
        self.max_problems = max_problems
        self.problems: list[Problem] = []
        self.warnings: list[str] = []
        self.shift = 0  # seq offset of the last out-of-place record (renumbered after a gap)

    def problem(self, kind: str, message: str, rec: StoredRecord | None = None) -> None:
        seq = rec.seq if rec else None
        self.problems.append(Problem(kind, message, seq, rec.record_id if rec else None))

    def checkpoint(self, note: str, what: str) -> Checkpoint | None:
        try:
            cp = parse_checkpoint(note)
        except CheckpointFormatError as exc:
            self.problems.append(Problem("signature", f"{what} is malformed: {exc}"))
            return None
        label = f"{what} (size {cp.size}, signed {cp.time or '?'})"
        if cp.origin != self.origin:
            self.problems.append(
                Problem("signature", f"{label} is for origin {cp.origin!r}, not {self.origin!r}")
            )
            return None
        key = self.keys.get((cp.key_name, cp.key_hash))
        if key is None:
            self.problems.append(
                Problem(
                    "signature",
                    f"{label} is signed by an unknown key (name {cp.key_name}, id "
                    f"{cp.key_hash.hex()}); pass the right --pubkey",
                )
            )
            return None
        if not cp.verify(key):
            self.problems.append(Problem("signature", f"{label} has an invalid signature"))
            return None
        return cp


def verify_store(
    store: Store,
    *,
    public_keys: Sequence[bytes] | None = None,
    trust_stored_keys: bool = False,
    pinned: str | None = None,
    reference: Store | None = None,
    max_problems: int = 20,
) -> VerifyReport:
    """Verify the whole trail in ``store`` against the pinned checkpoint keys ``public_keys``
    (PEM; several for a rotated signer). Without them the call is refused unless
    ``trust_stored_keys``: the keys recorded in the store prove consistency, not authorship, and
    the report says so. ``pinned`` is a checkpoint note an auditor saved earlier: the trail must
    still extend it. ``reference`` is another copy of the trail (a backup): where a re-chained
    rewrite is found, the first record that differs from it is named."""
    if not public_keys and not trust_stored_keys:
        raise AuditConfigError(
            "verify needs the checkpoint signer's public key: pass --pubkey FILE (kept out of "
            "band, see `bastion audit pubkey`) or --config FILE (the configured signer); "
            "--trust-stored-keys uses the keys stored in the trail, which proves nothing about "
            "who signed it"
        )
    with store.snapshot():
        in_store = store.keys()
        keys = [verifier_key(store.origin, pem) for pem in public_keys] if public_keys else in_store
        check = _Checker(store, keys, max_problems)
        pinned_ids = {(k.name, k.key_hash) for k in keys}
        for key in in_store:
            if (key.name, key.key_hash) not in pinned_ids:
                # The key table is an unsigned copy; a key nobody pinned is worth a look.
                check.warnings.append(
                    f"the trail's key table holds a key that is not pinned ({key.fingerprint}); "
                    "no checkpoint is accepted on its word"
                )
        valid = []
        for i, row in enumerate(store.checkpoints(), 1):
            cp = check.checkpoint(row.note, f"checkpoint #{i}")
            if cp is None:
                continue
            valid.append(cp)
            if row.size != cp.size or row.time != cp.time:
                column = "size" if row.size != cp.size else "time"
                stored, signed = (row.size, cp.size) if column == "size" else (row.time, cp.time)
                check.problems.append(
                    Problem(
                        "altered",
                        f"checkpoint #{i}'s {column} column says {stored} but its signed note "
                        f"says {signed}: the table's unsigned copy was edited",
                    )
                )
        pinned_cp = check.checkpoint(pinned, "the pinned checkpoint") if pinned else None
        head = store.head()
        report = _replay(check, valid, pinned_cp, head)
    fingerprints = tuple(dict.fromkeys(k.fingerprint for k in keys))
    report = replace(report, key_fingerprints=fingerprints, trusted_stored_keys=not public_keys)
    if reference is not None and any(p.kind == "rewritten" for p in report.problems):
        report = _locate_with_reference(report, store, reference, keys)
    return report


def _replay(
    check: _Checker, valid: list[Checkpoint], pinned: Checkpoint | None, head: Head
) -> VerifyReport:
    store = check.store
    anchors = {cp.size: cp.head for cp in valid}
    wanted = set(anchors) | ({pinned.size} if pinned else set())
    wanted |= {seq for cp in valid for seq, _ in cp.marks}
    at: dict[int, bytes] = {}
    first_seq = last_seq = count = 0
    prev2 = prev = b""
    expected = 1
    last_hash, last_time = b"", ""
    for rec in store.records():
        count += 1
        if count == 1:
            first_seq = rec.seq
            if rec.seq == 1:
                prev = genesis_hash(check.origin)
            elif rec.seq - 1 in anchors:
                prev = anchors[rec.seq - 1]  # the signed prune anchor
            else:
                check.problem(
                    "removed",
                    f"records 1..{rec.seq - 1} are missing and no signed prune anchor covers "
                    f"them: the first record present is {_name(rec)}",
                    rec,
                )
                prev = rec.hash
            expected = rec.seq
            at[rec.seq - 1] = prev
        if rec.seq != expected:
            check.problems.append(
                Problem(
                    "removed",
                    f"record seq {expected} is missing (removed): the trail jumps from seq "
                    f"{expected - 1} to {_name(rec)}",
                    expected,
                )
            )
            prev2, prev, expected = prev, rec.hash, rec.seq + 1
            continue
        computed = link(prev, rec.body)
        tail = parse_envelope_tail(rec.body)
        if computed != rec.hash or tail != (rec.record_id, rec.kind, rec.seq, rec.time):
            _diagnose(check, rec, tail, prev2, computed)
            computed = rec.hash  # resynchronise to find later, independent problems
        prev2, prev = prev, computed
        if rec.seq in wanted:
            at[rec.seq] = computed
        last_seq, expected = rec.seq, rec.seq + 1
        last_hash, last_time = rec.hash, rec.time

    covered, matching, last_ok = first_seq - 1 if count else 0, 0, first_seq - 1
    rewritten = False
    for cp in sorted(valid, key=lambda c: c.size):
        if count == 0:
            if cp.size > 0:
                check.problems.append(
                    Problem(
                        "truncated",
                        f"a checkpoint signed {cp.time} covers {cp.size} records but the trail "
                        f"holds none: records 1..{cp.size} were removed",
                        1,
                    )
                )
            continue
        if cp.size < first_seq - 1:
            continue  # older than the prune anchor: nothing left to compare it with
        if cp.size == first_seq - 1:
            matching += 1
            continue
        if cp.size > last_seq:
            check.problems.append(
                Problem(
                    "truncated",
                    f"a checkpoint signed {cp.time} covers {cp.size} records but the trail ends "
                    f"at seq {last_seq}: records {last_seq + 1}..{cp.size} were removed",
                    last_seq + 1,
                )
            )
        elif at.get(cp.size) != cp.head:
            if rewritten:
                continue  # a hash chain carries the first rewrite into every later checkpoint
            rewritten = True
            lo, hi = last_ok + 1, cp.size
            for seq, signed in cp.marks:  # the chain at each mark is signed too
                if seq < lo:
                    continue
                if at.get(seq) == signed:
                    lo = seq + 1
                else:
                    hi = seq
                    break
            if lo == hi:
                found = next(iter(store.records(after_seq=lo - 1)), None)
                named = _name(found) if found is not None and found.seq == lo else f"seq {lo}"
                what = (
                    f"{named} was altered and the later hashes recomputed: the chain matches "
                    f"the hash signed for seq {lo - 1} and not the one signed for seq {lo}"
                )
            else:
                what = (
                    f"one of records {lo}..{hi} was altered and the later hashes recomputed; "
                    "the signed checkpoints and their marks prove no narrower range (pass "
                    "--reference COPY to name the record)"
                )
            check.problems.append(
                Problem(
                    "rewritten",
                    f"records {last_ok + 1}..{cp.size} do not match the checkpoint signed "
                    f"{cp.time}: {what}",
                    lo,
                    through_seq=hi,
                )
            )
        else:
            matching += 1
            covered = last_ok = cp.size
    if pinned is not None:
        _check_pinned(check, pinned, at, first_seq, last_seq)
    head_seq = head.seq
    if head_seq > last_seq and count:
        check.problems.append(
            Problem(
                "truncated",
                f"the store's head says {head_seq} records were written but the trail ends at "
                f"seq {last_seq}: records {last_seq + 1}..{head_seq} were removed",
                last_seq + 1,
            )
        )
    elif count and head_seq < last_seq:
        check.problems.append(
            Problem(
                "inserted",
                f"the store's head says {head_seq} records were written but the trail runs to "
                f"seq {last_seq}: records {head_seq + 1}..{last_seq} were added beside the writer",
                head_seq + 1,
            )
        )
    head_problem = None
    if count and head_seq == last_seq and (head.hash != last_hash or head.time != last_time):
        # Most often a symptom of an edit named above (a truncation that forgot the head's
        # time), so it is listed after the record problems.
        column = "hash" if head.hash != last_hash else "time"
        head_problem = Problem(
            "altered",
            f"the store's head row holds a {column} that is not record seq {last_seq}'s: "
            "the head (an unsigned copy of the last record's hash and time) was edited",
            last_seq,
        )
    first_uncovered_id = None
    if count and covered < last_seq:
        nxt = next(iter(store.records(after_seq=covered)), None)
        first_uncovered_id = nxt.record_id if nxt else None
    problems = sorted(check.problems, key=lambda p: p.seq if p.seq is not None else 0)
    if head_problem is not None:
        problems.append(head_problem)
    problems = problems[: check.max_problems]
    return VerifyReport(
        location=store.location,
        origin=check.origin,
        records=count,
        first_seq=first_seq,
        last_seq=last_seq,
        covered_through=covered,
        checkpoints=matching,
        problems=tuple(problems),
        warnings=tuple(check.warnings),
        first_uncovered_id=first_uncovered_id,
    )


def _diagnose(
    check: _Checker,
    rec: StoredRecord,
    tail: tuple[str, str, int, str] | None,
    prev2: bytes,
    computed: bytes,
) -> None:
    name = _name(rec)
    if prev2 and link(prev2, rec.body) == rec.hash:
        check.problems.append(
            Problem(
                "inserted",
                f"record seq {rec.seq - 1} was inserted: {name} chains onto seq {rec.seq - 2}",
                rec.seq - 1,
            )
        )
        check.shift = rec.seq - tail[2] if tail else 0
    elif tail is None:
        check.problem("altered", f"{name} is altered: its body is not a well-formed record", rec)
    elif tail[2] != rec.seq:
        if rec.seq - tail[2] == check.shift and computed == rec.hash:
            return  # the same shift as the record before: one insertion or removal, not many
        check.shift = rec.seq - tail[2]
        check.problem(
            "reordered",
            f"{name} is out of place: its signed body is record seq {tail[2]} "
            "(records were reordered, or one was removed or inserted before it)",
            rec,
        )
    elif tail != (rec.record_id, rec.kind, rec.seq, rec.time):
        check.problem(
            "altered", f"{name} is altered: its columns disagree with its signed body", rec
        )
    else:
        check.problem("altered", f"{name} is altered: it does not match its chain hash", rec)


def _check_pinned(
    check: _Checker, pinned: Checkpoint, at: dict[int, bytes], first_seq: int, last_seq: int
) -> None:
    if pinned.size > last_seq:
        check.problems.append(
            Problem(
                "truncated",
                f"the pinned checkpoint (signed {pinned.time}) covers {pinned.size} records but "
                f"the trail ends at seq {last_seq}: records {last_seq + 1}..{pinned.size} were "
                "removed (truncated or rolled back)",
                last_seq + 1,
            )
        )
    elif pinned.size < first_seq - 1:
        check.warnings.append(
            f"the pinned checkpoint (size {pinned.size}) lies in the pruned part of the trail "
            f"(records before seq {first_seq}); it cannot be compared"
        )
    elif at.get(pinned.size) != pinned.head:
        check.problems.append(
            Problem(
                "rewritten",
                f"the trail does not extend the pinned checkpoint (signed {pinned.time}, size "
                f"{pinned.size}): records up to seq {pinned.size} were rewritten or rolled back",
                None,
            )
        )


def _locate_with_reference(
    report: VerifyReport, store: Store, reference: Store, keys: Sequence[VerifierKey]
) -> VerifyReport:
    """Name the first record of each rewritten range whose bytes differ from ``reference``,
    where the reference's own chain is vouched for by a signed checkpoint under ``keys``."""
    ref = verify_store(
        reference, public_keys=[k.public_key_pem for k in keys], trust_stored_keys=True
    )
    if reference.origin != store.origin or ref.problems:
        why = ref.problems[0].message if ref.problems else "it is another log's copy"
        return replace(
            report,
            warnings=(*report.warnings, f"the reference copy does not verify ({why}); unused"),
        )
    problems = []
    for problem in report.problems:
        if problem.kind != "rewritten" or problem.seq is None or problem.through_seq is None:
            problems.append(problem)
            continue
        end = min(problem.through_seq, ref.covered_through)
        found = None
        if problem.seq <= end:
            ours = store.records(after_seq=problem.seq - 1)
            theirs = reference.records(after_seq=problem.seq - 1)
            for mine, good in zip(ours, theirs, strict=False):
                if good.seq > end:
                    break
                if mine.seq != good.seq or mine.body != good.body:
                    found = (mine, good)
                    break
        if found is None:
            problems.append(problem)
            continue
        mine, good = found
        if any(p.kind == "altered" and p.seq == mine.seq for p in problems):
            continue  # later checkpoints' ranges lead back to the same record
        problems.append(
            Problem(
                "altered",
                f"{_name(mine)} was altered and the later hashes recomputed: its bytes differ "
                f"from the reference copy {reference.location}, whose chain the signed "
                f"checkpoints vouch for through seq {ref.covered_through}",
                mine.seq,
                mine.record_id,
            )
        )
    return replace(report, problems=tuple(problems))
