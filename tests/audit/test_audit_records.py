"""Record encoding, digests, checkpoint notes and config validation."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from pydantic import ValidationError

from gateway.audit import (
    AuditConfig,
    AuditConfigError,
    AuditRecordError,
    OutcomeRecord,
    load_digest_key,
    parse_checkpoint,
    text_digest,
    verifier_key,
)
from gateway.audit._checkpoint import sign_checkpoint
from gateway.audit._records import canonical_data, envelope, parse_envelope_tail
from pki.secret import Secret
from pki.signing import FileSigner
from tests.audit.helpers import sample_decision


@pytest.mark.parametrize(
    "data",
    [
        sample_decision().to_data(),
        OutcomeRecord("dec_1", 502, 1.25, None, None, None, "UpstreamError").to_data(),
        sample_decision(identity="spiffe://t/é\u2028x", entities={"Ω": 1, "A": 2}).to_data(),
    ],
    ids=["decision", "outcome", "non-ascii"],
)
def test_envelope_is_rfc8785_canonical(data: dict[str, Any]) -> None:
    """The spliced envelope equals RFC 8785 of the whole record, and its tail parses back."""
    body = envelope(
        canonical_data(data, limit=65536),
        record_id="dec_ab",
        kind="decision",
        seq=42,
        time="2025-01-02T03:04:05.000006Z",
    )
    assert body == rfc8785.dumps(json.loads(body))
    assert parse_envelope_tail(body) == ("dec_ab", "decision", 42, "2025-01-02T03:04:05.000006Z")


@pytest.mark.parametrize(
    ("record", "match"),
    [
        (sample_decision(text_digests=("my ssn is 078-05-1120",)), "never the text"),
        (OutcomeRecord("dec_1", 200, float("nan")), "finite"),
        (sample_decision(text_digests=("hmac-sha256:" + "0" * 64,) * 2000), "max_record_bytes"),
    ],
    ids=["raw-text-as-digest", "nan-latency", "too-large"],
)
def test_bad_records_are_refused(record: Any, match: str) -> None:
    """A record that would store raw text, a NaN or too many bytes raises AuditRecordError."""
    with pytest.raises(AuditRecordError, match=match):
        canonical_data(record.to_data(), limit=65536)


def test_text_digest_is_keyed_and_labelled() -> None:
    """Digests are HMAC-SHA256 under the key: labelled, stable, and different per key."""
    a, b = Secret("a" * 32), Secret("b" * 32)
    digest = text_digest(a, "078-05-1120")
    assert digest.startswith("hmac-sha256:")
    assert len(digest) == len("hmac-sha256:") + 64
    assert digest == text_digest(a, "078-05-1120")
    assert digest != text_digest(b, "078-05-1120")
    assert digest[12:] != hashlib.sha256(b"078-05-1120").hexdigest()


class _EcdsaRawSigner:
    """A Signer with an ECDSA P-256 key returning raw r||s, as a PKCS#11 token does."""

    algorithm = "ecdsa-p256-sha256"
    key_id = "hsm-test"

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())

    def public_key_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa-raw"], ids=["ed25519", "ecdsa-raw"])
def test_checkpoint_note_format_and_signature(kind: str, tmp_path: Path) -> None:
    """Checkpoints are C2SP signed notes (origin, size, base64 hash, em-dash signature line with
    the signed-note key id) that verify under the signer's public key and no other."""
    signer: Any = (
        FileSigner.generate(tmp_path / "k.pem", key_id="k")
        if kind == "ed25519"
        else _EcdsaRawSigner()
    )
    head = hashlib.sha256(b"x").digest()
    note = sign_checkpoint(
        signer, origin="bastion.test/audit", size=7, head=head, time="T", reason="close"
    )
    lines = note.split("\n")
    assert lines[:3] == ["bastion.test/audit", "7", base64.b64encode(head).decode()]
    assert lines[5] == ""
    assert lines[6].startswith("\u2014 bastion.test/audit ")
    cp = parse_checkpoint(note)
    key = verifier_key("bastion.test/audit", signer.public_key_pem())
    assert (cp.size, cp.head, cp.key_hash) == (7, head, key.key_hash)
    assert cp.verify(key)
    other = FileSigner.generate(tmp_path / "other.pem", key_id="o")
    assert not cp.verify(verifier_key("bastion.test/audit", other.public_key_pem()))


def test_ed25519_key_id_follows_signed_note_spec(tmp_path: Path) -> None:
    """The key id is SHA-256(name || 0x0A || 0x01 || raw public key)[:4] (c2sp.org/signed-note)."""
    signer = FileSigner.generate(tmp_path / "k.pem", key_id="k")
    pub = serialization.load_pem_public_key(signer.public_key_pem())
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    expected = hashlib.sha256(b"log.example\n\x01" + raw).digest()[:4]
    assert verifier_key("log.example", signer.public_key_pem()).key_hash == expected


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"backend": "sqlite"}, "audit.path is not set"),
        ({"backend": "postgres"}, "audit.dsn is not set"),
        ({"path": "a.db", "santize": True}, "Extra inputs"),
        ({"path": "a.db", "max_payload_bytes": 10}, "greater than or equal"),
        ({"path": "a.db", "origin": "has space"}, "may not contain spaces"),
        ({"path": "a.db", "checkpoint_interval_s": 0}, "greater than 0"),
    ],
    ids=[
        "sqlite-no-path",
        "postgres-no-dsn",
        "unknown-key",
        "payload-limit",
        "bad-origin",
        "interval",
    ],
)
def test_config_is_validated(fields: dict[str, Any], match: str) -> None:
    """Misconfigurations are refused at load, with the key and the fix in the message."""
    with pytest.raises(ValidationError, match=match):
        AuditConfig(**fields)


def test_dsn_is_a_secret() -> None:
    """A DSN (which may carry a password) never shows in the config's repr."""
    config = AuditConfig(backend="postgres", dsn="host=db password=hunter2-very-secret")
    assert "hunter2" not in repr(config)
    assert config.dsn is not None
    assert "hunter2" in config.dsn.reveal()


@pytest.mark.parametrize(
    ("content", "match"),
    [(None, "no audit digest key"), ("short", "shorter than 32"), ("k" * 40, None)],
    ids=["missing", "too-short", "good"],
)
def test_digest_key_loading(tmp_path: Path, content: str | None, match: str | None) -> None:
    """The digest key comes from a file and must be long enough to resist guessing."""
    fields: dict[str, Any] = {"path": tmp_path / "a.db"}
    if content is not None:
        (tmp_path / "key").write_text(content + "\n")
        fields["digest_key_file"] = tmp_path / "key"
    config = AuditConfig(**fields)
    if match is None:
        assert load_digest_key(config).reveal() == content
    else:
        with pytest.raises(AuditConfigError, match=match):
            load_digest_key(config)


def test_public_surface_is_pinned() -> None:
    """gateway.audit exports exactly the names the gateway and the CLI rely on."""
    import gateway.audit

    assert set(gateway.audit.__all__) == {
        "AuditConfig",
        "AuditConfigError",
        "AuditError",
        "AuditIntegrityError",
        "AuditRecordError",
        "AuditStats",
        "AuditTrail",
        "AuditUnavailable",
        "Checkpoint",
        "CheckpointFormatError",
        "DecisionInputs",
        "DecisionRecord",
        "GroupCommitTrail",
        "OutcomeRecord",
        "Problem",
        "PruneResult",
        "Store",
        "StoredRecord",
        "VerifyReport",
        "header_digest",
        "load_digest_key",
        "open_audit_trail",
        "open_store",
        "parse_checkpoint",
        "prune_store",
        "text_digest",
        "verifier_key",
        "verify_store",
    }
    assert all(hasattr(gateway.audit, name) for name in gateway.audit.__all__)


@pytest.mark.parametrize(
    "note",
    [
        "",
        "origin\n5\n",
        "o\nfive\nAAAA\n\n\u2014 o AAAAAAA=\n",
        "o\n5\nAAAA\n\n- o AAAAAAAA\n",
        "o\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\nmark x AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u2014 o AAAAAAAA\n",
        "o\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\nmark 3 AAAA\n\n\u2014 o AAAAAAAA\n",
        "o\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\nmark 3 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= extra\n\n\u2014 o AAAAAAAA\n",
    ],
    ids=[
        "empty",
        "unsigned",
        "bad-size",
        "no-em-dash",
        "mark-seq-not-a-number",
        "mark-hash-short",
        "mark-extra-field",
    ],
)
def test_malformed_checkpoints_are_audit_errors(note: str) -> None:
    """A note that does not parse raises CheckpointFormatError, part of Bastion's error tree."""
    from gateway.audit import CheckpointFormatError
    from pki.errors import BastionError

    with pytest.raises(CheckpointFormatError) as info:
        parse_checkpoint(note)
    assert isinstance(info.value, BastionError)
