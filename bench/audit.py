"""Audit trail throughput: durable records/s at 1, 8 and 64 concurrent writers (SQLite and
PostgreSQL), the latency an append adds to a request, and verify records/s.

    .venv/bin/python bench/audit.py [--backend sqlite|postgres|all] [--seconds 3]
                                    [--verify-records 200000]

Goals (issue #5): >= 5,000 durable records/s on SQLite, verify >= 100,000 records/s,
<= 0.5 ms added p50. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.audit import AuditConfig, open_audit_trail, open_store, verify_store
from gateway.audit._chain import Entry
from gateway.audit._records import canonical_data, new_record_id
from pki.signing import FileSigner
from tests.audit.helpers import sample_decision


async def _writers(config: AuditConfig, signer: FileSigner, writers: int, seconds: float) -> str:
    trail = open_audit_trail(config, signer)
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def writer(n: int) -> None:
        i = 0
        while time.perf_counter() < stop:
            started = time.perf_counter()
            await trail.append_decision(sample_decision(n * 1_000_000 + i))
            latencies.append(time.perf_counter() - started)
            i += 1

    began = time.perf_counter()
    await asyncio.gather(*(writer(n) for n in range(writers)))
    elapsed = time.perf_counter() - began
    stats = trail.stats()
    await trail.close()
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    return (
        f"{writers:>3} writers: {stats.records / elapsed:>9,.0f} durable records/s  "
        f"append p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  "
        f"{stats.records / max(1, stats.transactions):6.1f} records/transaction"
    )


def _verify_rate(config: AuditConfig, signer: FileSigner, records: int) -> str:
    trail = open_audit_trail(config, signer)  # creates the store and registers the key
    asyncio.run(trail.close())
    store = open_store(config)
    data = canonical_data(sample_decision().to_data(), limit=65536)
    for start in range(0, records, 5000):
        count = min(5000, records - start)
        store.append([Entry(new_record_id("decision"), "decision", data) for _ in range(count)])
    store.close()
    trail = open_audit_trail(config, signer)
    asyncio.run(trail.close())  # a checkpoint covering everything
    store = open_store(config)
    began = time.perf_counter()
    report = verify_store(store, public_keys=[signer.public_key_pem()])
    elapsed = time.perf_counter() - began
    store.close()
    status = "ok" if report.ok and not report.uncovered else "NOT OK"
    return f"verify: {report.records:,} records in {elapsed:.2f} s = {report.records / elapsed:,.0f} records/s ({status})"


def _run_backend(
    name: str,
    make_config: Callable[[str], AuditConfig],
    signer: FileSigner,
    seconds: float,
    verify_records: int,
) -> None:
    print(f"== {name}")
    for writers in (1, 8, 64):
        print("  " + asyncio.run(_writers(make_config(f"w{writers}"), signer, writers, seconds)))
    print("  " + _verify_rate(make_config("verify"), signer, verify_records))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--seconds", type=float, default=3.0, help="per concurrency level")
    parser.add_argument("--verify-records", type=int, default=200_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bastion-bench-audit-"))
    signer = FileSigner.generate(tmp / "audit.pem", key_id="bench")

    if args.backend in ("sqlite", "all"):
        _run_backend(
            f"sqlite (WAL, synchronous=FULL) in {tmp}",
            lambda name: AuditConfig(path=tmp / f"{name}.db", checkpoint_interval_s=3600),
            signer,
            args.seconds,
            args.verify_records,
        )
    if args.backend in ("postgres", "all"):
        from tests.fixtures.postgres import PostgresUnavailable, running_postgres

        try:
            with running_postgres() as server:
                import psycopg

                def pg_config(name: str) -> AuditConfig:
                    with psycopg.connect(server.dsn(), autocommit=True) as conn:
                        conn.execute(f'CREATE DATABASE "{name}"')
                    return AuditConfig(
                        backend="postgres",
                        dsn=server.dsn(name),
                        checkpoint_interval_s=3600,
                    )

                _run_backend(
                    "postgresql 15 (synchronous_commit=on, fsync=on)",
                    pg_config,
                    signer,
                    args.seconds,
                    args.verify_records,
                )
        except PostgresUnavailable as exc:
            print(f"== postgresql skipped: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
