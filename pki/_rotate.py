"""CA key rotation (``CA.rotate``): a new key and CA certificate, the old one kept trusted.

See :meth:`pki.ca.CA.rotate`. Kept apart from ``ca.py`` because it is a once-a-year operation
with its own file layout (``previous/``, ``ca-bundle.pem``).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pki._ca_keys import CASigner, new_file_key
from pki.ca import (
    CA,
    CA_BUNDLE,
    CA_CERT,
    CA_META,
    PREVIOUS,
    _atomic_write,
    _now,
    _self_signed,
    _write_meta,
)
from pki.errors import IssueError, PassphraseError
from pki.secret import Secret

if TYPE_CHECKING:
    from pki.hsm import HsmSession

__all__ = ["rotate_ca"]


def rotate_ca(
    ca: CA,
    *,
    passphrase: Secret | None,
    hsm: HsmSession | None,
    label: str | None,
    lifetime: dt.timedelta,
) -> CA:
    """See :meth:`pki.ca.CA.rotate`."""
    ca._require_signer()
    old = ca.key_meta
    previous = ca.directory / PREVIOUS
    previous.mkdir(exist_ok=True)
    generation = len(list(previous.glob("ca-*.crt"))) + 2
    signer: CASigner
    if old.get("type") == "hsm":
        if hsm is None:
            raise PassphraseError("the CA key is in the HSM: rotating needs an HSM session")
        from pki.hsm import HsmCASigner

        new_label = label or f"{old['label'].rsplit('.', 1)[0]}.{generation}"
        if not hsm.ensure_ec_keypair(new_label):
            raise IssueError(
                f"a key labelled {new_label!r} already exists on the token; rotating needs a "
                "new key: choose another --key-label"
            )
        signer = HsmCASigner(hsm, new_label)
        key_meta = {"type": "hsm", "label": new_label, "token": hsm.config.token_label}
    else:
        if passphrase is None or len(passphrase.reveal()) < 12:
            raise PassphraseError(
                "the new CA key file needs a passphrase of at least 12 characters"
            )
        signer, key_meta = new_file_key(ca.directory / f"ca-{generation}.key", passphrase)
    certificate = _self_signed(signer, ca.certificate.subject, lifetime)
    old_serial = format(ca.certificate.serial_number, "x")
    (previous / f"ca-{old_serial}.crt").write_bytes(
        ca.certificate.public_bytes(serialization.Encoding.PEM)
    )
    meta = json.loads((ca.directory / CA_META).read_text())
    meta["previous"] = [*meta.get("previous", []), {"serial": old_serial, "key": old}]
    meta["key"] = key_meta
    bundle = [certificate.public_bytes(serialization.Encoding.PEM)]
    now = _now()
    for path in sorted(previous.glob("ca-*.crt")):
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        if cert.not_valid_after_utc > now:
            bundle.append(cert.public_bytes(serialization.Encoding.PEM))
    _atomic_write(ca.directory / CA_BUNDLE, b"".join(bundle))
    _atomic_write(ca.directory / CA_CERT, bundle[0])
    _write_meta(ca.directory, meta)
    rotated = CA(ca.directory, certificate, ca.trust_domain, signer)
    rotated.write_crl()
    return rotated
