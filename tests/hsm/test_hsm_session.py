"""pki.hsm against a real SoftHSM2 token: keys, KEK encryption, signing, error translation."""

from __future__ import annotations

import threading
from pathlib import Path

import pkcs11
import pkcs11.exceptions as p11
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pki.hsm import (
    HsmConfig,
    HSMConfigError,
    HSMError,
    HsmSession,
    HsmSettings,
    KeyMissingError,
    ModuleLoadError,
    PinError,
    TokenNotFoundError,
    UnwrapError,
    verify_ecdsa_p256_sha256,
)
from pki.hsm._errors import translate_pkcs11
from pki.secret import Secret
from pki.signing import Signer
from tests.fixtures.softhsm import SoftHsm

pytestmark = pytest.mark.hsm


def test_kek_is_sensitive_and_non_extractable(hsm_session: HsmSession) -> None:
    """The KEK is reported sensitive/non-extractable and reading its CKA_VALUE is refused."""
    kek = next(k for k in hsm_session.key_inventory() if k.role == "kek")
    assert (kek.present, kek.sensitive, kek.extractable) == (True, True, False)
    raw = hsm_session._login.session.get_key(
        object_class=pkcs11.ObjectClass.SECRET_KEY, label=hsm_session.config.kek_label
    )
    with pytest.raises(p11.AttributeSensitive):
        raw[pkcs11.Attribute.VALUE]


def test_ensure_keys_changes_nothing_that_exists(hsm_session: HsmSession) -> None:
    """A second init on a token that has the keys creates nothing and keeps the key ids."""
    before = hsm_session.key_inventory()
    assert hsm_session.ensure_keys() == []
    assert hsm_session.key_inventory() == before


def test_data_key_wrap_round_trip(hsm_session: HsmSession) -> None:
    """A wrapped data key unwraps to the same bytes and the blob does not contain them."""
    key = bytes(range(32))
    wrapped = hsm_session.wrap_data_key(key, aad=b"purpose")
    assert key not in wrapped.blob
    assert wrapped.kek_id == hsm_session.kek_id()
    assert bytes(hsm_session.unwrap_data_key_plaintext(wrapped, aad=b"purpose")) == key
    assert "blob" not in repr(wrapped)


@pytest.mark.parametrize(
    ("mutate", "aad"),
    [
        (lambda b: b, b"other purpose"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), b"purpose"),
        (lambda b: bytes([b[0] ^ 1]) + b[1:], b"purpose"),
        (lambda b: b[:20], b"purpose"),
    ],
    ids=["wrong-aad", "flipped-tag", "flipped-nonce", "truncated"],
)
def test_altered_wrapped_key_is_refused(hsm_session: HsmSession, mutate, aad: bytes) -> None:
    """A wrapped key that was altered or is presented for another purpose fails to unwrap."""
    wrapped = hsm_session.wrap_data_key(bytes(32), aad=b"purpose")
    altered = type(wrapped)(
        wrapped.mechanism, wrapped.kek_label, wrapped.kek_id, mutate(wrapped.blob)
    )
    with pytest.raises(UnwrapError):
        hsm_session.unwrap_data_key_plaintext(altered, aad=aad)


def test_other_tokens_kek_cannot_unwrap(hsm_session: HsmSession, softhsm: SoftHsm) -> None:
    """A key wrapped on one token is refused on another whose KEK has the same label."""
    wrapped = hsm_session.wrap_data_key(bytes(32), aad=b"x")
    with HsmSession(softhsm.other_config) as other, pytest.raises(UnwrapError, match="KEK id"):
        other.unwrap_data_key_plaintext(wrapped, aad=b"x")


def test_signer_satisfies_protocol_and_verifies_with_cryptography(
    hsm_session: HsmSession,
) -> None:
    """HsmSigner is a pki.signing.Signer whose DER signatures verify with cryptography."""
    signer = hsm_session.signer()
    assert isinstance(signer, Signer)
    assert signer.algorithm == "ecdsa-p256-sha256"
    signature = signer.sign(b"checkpoint 42")
    public = serialization.load_pem_public_key(signer.public_key_pem())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, b"checkpoint 42", ec.ECDSA(hashes.SHA256()))
    assert verify_ecdsa_p256_sha256(signer.public_key_pem(), signature, b"checkpoint 42")
    assert not verify_ecdsa_p256_sha256(signer.public_key_pem(), signature, b"checkpoint 43")
    assert len(signer.sign_raw(b"x")) == 64
    assert signer.key_id == hsm_session.signer().key_id


def test_one_session_serves_many_threads(hsm_session: HsmSession, hsm_config: HsmConfig) -> None:
    """Concurrent KEK operations from several threads and handles all succeed."""
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            with HsmSession(hsm_config) as mine:
                for _ in range(10):
                    aad = str(i).encode()
                    wrapped = mine.kek_encrypt(aad * 4, aad=aad)
                    assert bytes(mine.kek_decrypt_plaintext(wrapped, aad=aad)) == aad * 4
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert hsm_session.kek_id()  # the shared session outlives the other handles


def _config(softhsm: SoftHsm, **changes: object) -> HsmConfig:
    base = softhsm.other_config
    fields = {
        "module": base.module,
        "token_label": base.token_label,
        "pin": base.pin,
        "kek_label": base.kek_label,
    }
    fields.update(changes)
    return HsmConfig(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "error", "words"),
    [
        ({"pin": Secret("wrong-pin-1234")}, PinError, "PIN"),
        ({"token_label": "no-such-token"}, TokenNotFoundError, "SOFTHSM2_CONF"),
        ({"module": Path("/nonexistent/libpkcs11.so")}, ModuleLoadError, "does not exist"),
    ],
    ids=["wrong-pin", "missing-token", "missing-module"],
)
def test_open_failures_are_translated(
    softhsm: SoftHsm, changes: dict[str, object], error: type[HSMError], words: str
) -> None:
    """Opening with a wrong PIN, an absent token or module raises the matching HSMError."""
    with pytest.raises(error, match=words) as info:
        HsmSession(_config(softhsm, **changes)).close()
    assert "wrong-pin-1234" not in str(info.value)


def test_second_login_with_other_pin_is_refused(hsm_session: HsmSession) -> None:
    """While the token is logged in, a handle with a different PIN is refused, not let in."""
    cfg = hsm_session.config
    other = HsmConfig(module=cfg.module, token_label=cfg.token_label, pin=Secret("nope-1234"))
    with pytest.raises(PinError):
        HsmSession(other)


def test_missing_key_is_named(hsm_config: HsmConfig) -> None:
    """Using a KEK label the token lacks raises KeyMissingError naming the label and the fix."""
    cfg = HsmConfig(
        module=hsm_config.module,
        token_label=hsm_config.token_label,
        pin=hsm_config.pin,
        kek_label="absent-kek",
    )
    with HsmSession(cfg) as session, pytest.raises(KeyMissingError, match=r"absent-kek.*hsm init"):
        session.kek_encrypt(b"x", aad=b"")


def test_closed_session_refuses_work(hsm_config: HsmConfig) -> None:
    """A closed handle raises HSMError instead of using a dead PKCS#11 session."""
    session = HsmSession(hsm_config)
    session.close()
    with pytest.raises(HSMError, match="closed"):
        session.kek_encrypt(b"x", aad=b"")


@pytest.mark.parametrize(
    "exc_type",
    sorted(
        (c for c in vars(p11).values() if isinstance(c, type) and issubclass(c, p11.PKCS11Error)),
        key=lambda c: c.__name__,
    ),
    ids=lambda c: c.__name__,
)
def test_every_pkcs11_exception_is_translated(exc_type: type[Exception]) -> None:
    """No PKCS#11 exception escapes translate_pkcs11 untranslated."""
    with pytest.raises(HSMError), translate_pkcs11("decrypt something", token="t", key="k"):
        raise exc_type()


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({}, "BASTION_HSM_TOKEN"),
        ({"BASTION_HSM_TOKEN": "t"}, "no HSM PIN"),
        ({"BASTION_HSM_TOKEN": "t", "BASTION_HSM_PIN_FILE": "/nonexistent/pin"}, "cannot read"),
        ({"BASTION_HSM_TOKEN": "x" * 33, "BASTION_HSM_PIN": "1234"}, "1 to 32 bytes"),
    ],
    ids=["no-token", "no-pin", "unreadable-pin-file", "label-too-long"],
)
def test_config_from_env_errors(env: dict[str, str], words: str) -> None:
    """Incomplete HSM environment is refused with a message naming what to set."""
    with pytest.raises(HSMConfigError, match=words):
        HsmConfig.from_env(env)


def test_config_never_shows_pin() -> None:
    """The PIN is a Secret: repr of the config and the settings never include it."""
    cfg = HsmConfig.from_env({"BASTION_HSM_TOKEN": "t", "BASTION_HSM_PIN": "s3cr3t-pin"})
    assert "s3cr3t-pin" not in repr(cfg)
    assert cfg.pin.reveal() == "s3cr3t-pin"


def test_settings_need_exactly_one_pin_source() -> None:
    """The YAML hsm section takes pin_file or pin_env, not both and not neither."""
    with pytest.raises(ValueError, match="exactly one"):
        HsmSettings(token="t")
    with pytest.raises(ValueError, match="exactly one"):
        HsmSettings(token="t", pin_env="A", pin_file=Path("/x"))
    with pytest.raises(ValueError, match="extra"):
        HsmSettings.model_validate({"token": "t", "pin_env": "A", "pin": "1234"})
