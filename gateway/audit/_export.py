"""Reading the trail for people: JSON Lines and CSV export, and ``tail`` lines for operators."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from gateway.audit._errors import AuditConfigError
from gateway.audit._store import StoredRecord

__all__ = ["CSV_COLUMNS", "csv_lines", "jsonl_lines", "normalize_time", "tail_line"]

CSV_COLUMNS = (
    "seq",
    "id",
    "kind",
    "time",
    "identity",
    "client_addr",
    "endpoint",
    "model",
    "request_id",
    "entities",
    "rule_id",
    "action",
    "route",
    "policy_version",
    "operations",
    "upstream",
    "text_digests",
    "decision_id",
    "status",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "error_class",
    "before",
    "through_seq",
    "removed",
)


def normalize_time(text: str, *, option: str) -> str:
    """An RFC 3339 date or date-time (naive means UTC) as the store's time string."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise AuditConfigError(
            f"{option} {text!r} is not a date or RFC 3339 time; use e.g. 2025-01-31 or "
            "2025-01-31T12:00:00Z"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def jsonl_lines(records: Iterable[StoredRecord]) -> Iterator[str]:
    """Each record's canonical bytes as stored: what the chain hashes, one per line."""
    for rec in records:
        yield rec.body.decode("utf-8") + "\n"


def _cell(value: object) -> object:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value  # spreadsheet formula injection (OWASP "CSV Injection")
    return value


def csv_lines(records: Iterable[StoredRecord]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for rec in records:
        body = json.loads(rec.body)
        row = {k: _cell(v) for k, v in body.get("data", {}).items()}
        row.update(seq=rec.seq, id=rec.record_id, kind=rec.kind, time=rec.time)
        writer.writerow(row)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def tail_line(rec: StoredRecord) -> str:
    """One human-readable line per record (no digests: they mean nothing to a person)."""
    data = json.loads(rec.body).get("data", {})
    head = f"{rec.seq:>8} {rec.time} {rec.kind:<8} {rec.record_id}"
    if rec.kind == "decision":
        entities = ",".join(f"{k}={v}" for k, v in sorted(data.get("entities", {}).items()))
        return (
            f"{head} {data.get('identity')} {data.get('endpoint')} model={data.get('model')} "
            f"action={data.get('action')} route={data.get('route')} rule={data.get('rule_id')} "
            f"entities=[{entities}]"
        )
    if rec.kind == "outcome":
        return (
            f"{head} decision={data.get('decision_id')} status={data.get('status')} "
            f"latency_ms={data.get('latency_ms')} upstream={data.get('upstream')} "
            f"tokens={data.get('prompt_tokens')}/{data.get('completion_tokens')} "
            f"error={data.get('error_class')}"
        )
    details = " ".join(f"{k}={v}" for k, v in sorted(data.items()))
    return f"{head} {details}"
