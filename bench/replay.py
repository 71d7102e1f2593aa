"""Verify and policy-replay throughput on a trail of decision records carrying their inputs.

    .venv/bin/python bench/replay.py [--records 100000] [--distinct 2000]

Builds a SQLite trail of ``--records`` decision records (``--distinct`` different request facts,
decided by policies/default.yaml, inputs recorded as the gateway records them), signs one
checkpoint, then prints records/s for:

- ``verify_store`` in-process, and ``bastion audit verify --sqlite --pubkey`` end to end (a fresh
  process: start-up included);
- ``replay_decisions`` in-process, and ``bastion policy replay --sqlite --policy`` end to end,
  against an edited default policy (contact details allowed to the managed API).

Prints figures; asserts nothing (issue #16 asks for the numbers in its closing note).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.audit import (  # noqa: E402
    AuditConfig,
    DecisionInputs,
    DecisionRecord,
    open_store,
    verify_store,
)
from gateway.audit._chain import Entry  # noqa: E402
from gateway.audit._checkpoint import sign_checkpoint, verifier_key  # noqa: E402
from gateway.audit._records import canonical_data, new_record_id, rfc3339_now  # noqa: E402
from gateway.audit.sqlite import SqliteStore  # noqa: E402
from gateway.detect.findings import Finding  # noqa: E402
from gateway.policy import RequestFacts, decide, load_policy_text, replay_decisions  # noqa: E402
from pki.signing import FileSigner  # noqa: E402

DEFAULT = (ROOT / "policies" / "default.yaml").read_text(encoding="utf-8")
EDITED = DEFAULT.replace(
    "        any: [EMAIL_ADDRESS, PHONE_NUMBER, IP_ADDRESS]\n    then:\n      route: onprem\n",
    "        any: [EMAIL_ADDRESS, PHONE_NUMBER, IP_ADDRESS]\n    then:\n      route: openai\n"
    "      sanitize: {default: pseudonymize}\n",
)
TYPES = ("PERSON", "LOCATION", "EMAIL_ADDRESS", "PHONE_NUMBER", "US_SSN", "DATE_TIME", "URL")


def _facts(rng: random.Random, n: int) -> list[RequestFacts]:
    out = []
    for i in range(n):
        kinds = rng.sample(TYPES, rng.randint(0, 3))
        findings = tuple(
            Finding(k, round(rng.uniform(0.3, 1.0), 4), "messages[0].content", 0, 1, "bench")
            for k in kinds
            for _ in range(rng.randint(1, 2))
        )
        out.append(
            RequestFacts(
                f"spiffe://corp.example/svc/s{i % 40}",
                "chat-default",
                "/v1/chat/completions",
                findings,
            )
        )
    return out


def _build(db: Path, signer: FileSigner, records: int, distinct: int) -> None:
    policy = load_policy_text(DEFAULT)
    rng = random.Random(16)
    facts = _facts(rng, distinct)
    encoded = []
    for f in facts:
        d = decide(f, policy)
        stats: dict[str, tuple[int, float]] = {}
        for x in f.findings:
            c, s = stats.get(x.entity_type, (0, x.score))
            stats[x.entity_type] = (c + 1, max(s, x.score))
        rec = DecisionRecord(
            identity=f.identity,
            client_addr="10.0.0.1:40000",
            endpoint=f.endpoint,
            model=f.model,
            request_id="r",
            entities={k: v[0] for k, v in stats.items()},
            rule_id=d.rule_id,
            action=d.action.value,
            route=d.route,
            policy_version=d.policy_version,
            operations={k: v.value for k, v in d.operations.items()},
            upstream="worker",
            text_digests=("hmac-sha256:" + "ab" * 32,) * 2,
            inputs=DecisionInputs(entities=stats, headers={}, threshold=policy.threshold),
        )
        encoded.append(canonical_data(rec.to_data(), limit=65536))
    store = SqliteStore(db, origin="bench.local/audit", create=True)
    try:
        store.register_key(verifier_key(store.origin, signer.public_key_pem()))
        batch = 5000
        for start in range(0, records, batch):
            store.append(
                [
                    Entry(new_record_id("decision"), "decision", encoded[(start + i) % distinct])
                    for i in range(min(batch, records - start))
                ]
            )
        head = store.head()
        now = rfc3339_now()
        note = sign_checkpoint(
            signer, origin=store.origin, size=head.seq, head=head.hash, time=now, reason="bench"
        )
        store.add_checkpoint(head.seq, now, note)
    finally:
        store.close()


def _timed_cli(argv: list[str]) -> float:
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *argv], capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed ({done.returncode}): {done.stderr[-500:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--distinct", type=int, default=2_000, help="distinct request facts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bastion-replay-bench-") as tmp:
        base = Path(tmp)
        signer = FileSigner.generate(base / "audit.pem", key_id="audit")
        pub = base / "audit.pub"
        pub.write_bytes(signer.public_key_pem())
        db = base / "audit.db"
        began = time.perf_counter()
        _build(db, signer, args.records, args.distinct)
        print(f"built {args.records:,} decision records in {time.perf_counter() - began:.1f} s")
        config = AuditConfig(path=db)

        store = open_store(config, read_only=True)
        try:
            began = time.perf_counter()
            report = verify_store(store, public_keys=[signer.public_key_pem()])
            elapsed = time.perf_counter() - began
        finally:
            store.close()
        assert report.ok, report.summary()
        print(
            f"verify (in-process):     {args.records / elapsed:>10,.0f} records/s  ({elapsed:.2f} s)"
        )
        elapsed = _timed_cli(["audit", "verify", "--sqlite", str(db), "--pubkey", str(pub)])
        print(
            f"verify (CLI end to end): {args.records / elapsed:>10,.0f} records/s  ({elapsed:.2f} s)"
        )

        edited = load_policy_text(EDITED)
        store = open_store(config, read_only=True)
        try:
            began = time.perf_counter()
            with store.snapshot():
                result = replay_decisions(
                    (
                        (r.record_id, r.time, r.body)
                        for r in store.records()
                        if r.kind == "decision"
                    ),
                    edited,
                )
            elapsed = time.perf_counter() - began
        finally:
            store.close()
        print(
            f"replay (in-process):     {args.records / elapsed:>10,.0f} records/s  ({elapsed:.2f} s; "
            f"{result.changed:,} changed, {result.unchanged:,} unchanged)"
        )
        policy = base / "edited.yaml"
        policy.write_text(EDITED)
        elapsed = _timed_cli(["policy", "replay", "--sqlite", str(db), "--policy", str(policy)])
        print(
            f"replay (CLI end to end): {args.records / elapsed:>10,.0f} records/s  ({elapsed:.2f} s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
