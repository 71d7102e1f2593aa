"""One logged-in PKCS#11 session per token per process, shared and serialised by a lock.

PKCS#11 login state belongs to the application, not to a session: a second ``C_Login`` on the
same token fails with ``CKR_USER_ALREADY_LOGGED_IN`` and any ``C_Logout`` logs every session out.
So every :class:`HsmSession` for the same (module, token) shares one underlying session, counted by
reference and closed (logged out) when the last holder closes. Operations hold a lock: a PKCS#11
session must not run two operations at once. Every call blocks; async callers wrap it in
``asyncio.to_thread``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.mechanisms import GCMParams
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from pki.hsm._config import HsmConfig
from pki.hsm._errors import (
    HSMOperationError,
    KeyMissingError,
    KeyPolicyError,
    ModuleLoadError,
    PinError,
    UnwrapError,
    translate_pkcs11,
)

if TYPE_CHECKING:
    from pki.hsm._signer import HsmSigner

__all__ = ["DATA_KEY_BYTES", "HsmSession", "KeyInfo", "TokenInfo", "WrappedKey"]

DATA_KEY_BYTES = 32  # AES-256
_GCM_NONCE = 12
_GCM_TAG = 16
_KEY_ID_BYTES = 16
_WRAP_MECHANISM = "CKM_AES_GCM"
_P256 = "secp256r1"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What ``bastion hsm status`` shows about the token (no secrets)."""

    label: str
    manufacturer: str
    model: str
    serial: str
    library: str
    mechanisms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One of Bastion's keys on the token: whether it exists and its protective attributes."""

    role: str
    label: str
    present: bool
    key_type: str = ""
    key_id: str = ""
    sensitive: bool | None = None
    extractable: bool | None = None


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key encrypted under the KEK: ``blob`` is GCM nonce ‖ ciphertext ‖ tag."""

    mechanism: str
    kek_label: str
    kek_id: str
    blob: bytes = field(repr=False)

    def to_json(self) -> dict[str, str]:
        return {
            "mechanism": self.mechanism,
            "kek_label": self.kek_label,
            "kek_id": self.kek_id,
            "blob": self.blob.hex(),
        }

    @classmethod
    def from_json(cls, data: object) -> WrappedKey:
        if not isinstance(data, dict) or set(data) != {"mechanism", "kek_label", "kek_id", "blob"}:
            raise UnwrapError(
                "wrapped key record is malformed: expected mechanism, kek_label, kek_id, blob"
            )
        try:
            blob = bytes.fromhex(str(data["blob"]))
        except ValueError:
            raise UnwrapError("wrapped key blob is not hexadecimal") from None
        return cls(str(data["mechanism"]), str(data["kek_label"]), str(data["kek_id"]), blob)


class _Login:
    """The process's single logged-in session on one token."""

    def __init__(self, key: tuple[str, str], config: HsmConfig, token: Any, session: Any) -> None:
        self.key = key
        self.pin = config.pin
        self.token = token
        self.session = session
        self.lock = threading.RLock()
        self.refs = 1
        self.objects: dict[tuple[str, int], Any] = {}


_REGISTRY: dict[tuple[str, str], _Login] = {}
# Guards _REGISTRY: login state is process-global in PKCS#11, so its bookkeeping is too.
_REGISTRY_LOCK = threading.Lock()


def _load_module(module: Path) -> Any:
    if not module.is_file():
        raise ModuleLoadError(
            f"PKCS#11 module {module} does not exist. Install SoftHSM2 (Debian: softhsm2) for "
            "development, or give the vendor's library path (Luna, CloudHSM, YubiHSM)."
        )
    try:
        return pkcs11.lib(str(module))
    except (OSError, RuntimeError) as exc:
        raise ModuleLoadError(
            f"PKCS#11 module {module} could not be loaded ({type(exc).__name__}). Check that it "
            "is a PKCS#11 library for this architecture and that its configuration is readable."
        ) from None


def _acquire(config: HsmConfig) -> _Login:
    key = (str(config.module), config.token_label)
    with _REGISTRY_LOCK:
        login = _REGISTRY.get(key)
        if login is not None:
            if login.pin != config.pin:
                raise PinError(
                    f"the user PIN for token {config.token_label!r} differs from the PIN this "
                    "process already logged in with; check the PIN file or environment variable"
                )
            login.refs += 1
            return login
        lib = _load_module(config.module)
        with translate_pkcs11("find the token", token=config.token_label):
            token = lib.get_token(token_label=config.token_label)
        with translate_pkcs11("log in", token=config.token_label):
            session = token.open(rw=True, user_pin=config.pin.reveal())
        login = _Login(key, config, token, session)
        _REGISTRY[key] = login
        return login


def _release(login: _Login) -> None:
    with _REGISTRY_LOCK:
        login.refs -= 1
        if login.refs > 0:
            return
        _REGISTRY.pop(login.key, None)
    with login.lock, translate_pkcs11("close the session", token=login.key[1]):
        login.objects.clear()
        login.session.close()


class HsmSession:
    """A handle on the token: key lookup and creation, KEK encrypt/decrypt, data-key wrapping and
    ECDSA signing. Cheap to create; all handles on one token share one PKCS#11 session."""

    def __init__(self, config: HsmConfig) -> None:
        self._config = config
        self._login = _acquire(config)
        self._closed = False

    @property
    def config(self) -> HsmConfig:
        return self._config

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"HsmSession(token={self._config.token_label!r}, {state})"

    def __enter__(self) -> HsmSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _release(self._login)

    def _session(self) -> Any:
        if self._closed:
            raise HSMOperationError(
                f"the HsmSession on token {self._config.token_label!r} is closed; open a new one"
            )
        return self._login.session

    # -- token and keys -------------------------------------------------------------------

    def token_info(self) -> TokenInfo:
        """Token label, maker, model, serial and the mechanisms the module offers."""
        self._session()
        token = self._login.token
        with self._login.lock, translate_pkcs11("read token info", token=token.label):
            mechanisms = sorted(
                m.name if isinstance(m, Mechanism) else hex(m) for m in token.slot.get_mechanisms()
            )
            return TokenInfo(
                label=token.label,
                manufacturer=token.manufacturer_id,
                model=token.model,
                serial=bytes(token.serial).decode("ascii", "replace"),
                library=str(self._config.module),
                mechanisms=tuple(mechanisms),
            )

    def _find(self, object_class: ObjectClass, key_type: KeyType, label: str) -> Any | None:
        session = self._session()  # refuses a closed handle before the cache is consulted
        cache_key = (label, int(object_class))
        cached = self._login.objects.get(cache_key)
        if cached is not None:
            return cached
        found = list(
            session.get_objects(
                {
                    Attribute.CLASS: object_class,
                    Attribute.KEY_TYPE: key_type,
                    Attribute.LABEL: label,
                }
            )
        )
        if len(found) > 1:
            raise KeyPolicyError(
                f"{len(found)} objects labelled {label!r} on token {self._config.token_label!r}; "
                "labels must be unique: remove or relabel the duplicates"
            )
        if not found:
            return None
        self._login.objects[cache_key] = found[0]
        return found[0]

    def _require(self, object_class: ObjectClass, key_type: KeyType, label: str) -> Any:
        obj = self._find(object_class, key_type, label)
        if obj is None:
            raise KeyMissingError(
                f"no {key_type.name} {object_class.name.lower()} labelled {label!r} on token "
                f"{self._config.token_label!r}. Create it with `bastion hsm init`, or check the "
                "key label in the configuration."
            )
        return obj

    def key_inventory(self) -> list[KeyInfo]:
        """Which of Bastion's keys exist, with their ids and protective attributes."""
        cfg = self._config
        out: list[KeyInfo] = []
        token = cfg.token_label
        with self._login.lock, translate_pkcs11("list keys", token=token):
            for role, cls, ktype, label in (
                ("kek", ObjectClass.SECRET_KEY, KeyType.AES, cfg.kek_label),
                ("signing-private", ObjectClass.PRIVATE_KEY, KeyType.EC, cfg.signing_key_label),
                ("signing-public", ObjectClass.PUBLIC_KEY, KeyType.EC, cfg.signing_key_label),
            ):
                obj = self._find(cls, ktype, label)
                if obj is None:
                    out.append(KeyInfo(role=role, label=label, present=False))
                    continue
                attrs = [Attribute.ID]
                if cls is not ObjectClass.PUBLIC_KEY:
                    attrs += [Attribute.SENSITIVE, Attribute.EXTRACTABLE]
                values = obj.get_attributes(attrs)
                out.append(
                    KeyInfo(
                        role=role,
                        label=label,
                        present=True,
                        key_type=ktype.name,
                        key_id=bytes(values[Attribute.ID]).hex(),
                        sensitive=values.get(Attribute.SENSITIVE),
                        extractable=values.get(Attribute.EXTRACTABLE),
                    )
                )
        return out

    def ensure_keys(self) -> list[str]:
        """Create the KEK and the signing key pair where missing; check, never change, what
        exists. Returns the roles created. Refuses an extractable or non-sensitive KEK."""
        cfg = self._config
        created: list[str] = []
        with self._login.lock, translate_pkcs11("create keys", token=cfg.token_label):
            session = self._session()
            kek = self._find(ObjectClass.SECRET_KEY, KeyType.AES, cfg.kek_label)
            if kek is None:
                session.generate_key(
                    KeyType.AES,
                    256,
                    id=os.urandom(_KEY_ID_BYTES),
                    label=cfg.kek_label,
                    store=True,
                    capabilities=MechanismFlag.ENCRYPT
                    | MechanismFlag.DECRYPT
                    | MechanismFlag.WRAP
                    | MechanismFlag.UNWRAP,
                    template={
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        Attribute.PRIVATE: True,
                    },
                )
                created.append("kek")
            else:
                self._check_kek(kek)
            if self._ensure_ec_keypair(session, cfg.signing_key_label):
                created.append("signing")
        return created

    def ensure_ec_keypair(self, label: str) -> bool:
        """Create a non-extractable ECDSA P-256 key pair labelled ``label`` unless it exists
        (the CA key, for instance); True if it was created. Refuses a half pair and a private
        key that is extractable or not sensitive."""
        with (
            self._login.lock,
            translate_pkcs11("create a key pair", token=self._config.token_label),
        ):
            created = self._ensure_ec_keypair(self._session(), label)
            private = self._require(ObjectClass.PRIVATE_KEY, KeyType.EC, label)
            values = private.get_attributes([Attribute.SENSITIVE, Attribute.EXTRACTABLE])
            if values[Attribute.EXTRACTABLE] or not values[Attribute.SENSITIVE]:
                raise KeyPolicyError(
                    f"the private key {label!r} on token {self._config.token_label!r} is "
                    "extractable or not sensitive; Bastion refuses it. Use another label."
                )
            return created

    def _ensure_ec_keypair(self, session: Any, label: str) -> bool:
        cfg = self._config
        private = self._find(ObjectClass.PRIVATE_KEY, KeyType.EC, label)
        public = self._find(ObjectClass.PUBLIC_KEY, KeyType.EC, label)
        if private is None and public is None:
            params = session.create_domain_parameters(
                KeyType.EC,
                {Attribute.EC_PARAMS: encode_named_curve_parameters(_P256)},
                local=True,
            )
            params.generate_keypair(
                id=os.urandom(_KEY_ID_BYTES),
                label=label,
                store=True,
                private_template={
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.PRIVATE: True,
                },
            )
            return True
        if private is None or public is None:
            half = "private" if private is None else "public"
            raise KeyPolicyError(
                f"the key pair {label!r} on token {cfg.token_label!r} has no {half} half; "
                "remove the other half or restore it, then run init again"
            )
        return False

    def _check_kek(self, kek: Any) -> None:
        values = kek.get_attributes(
            [Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.VALUE_LEN]
        )
        if values[Attribute.EXTRACTABLE] or not values[Attribute.SENSITIVE]:
            raise KeyPolicyError(
                f"the KEK {self._config.kek_label!r} on token {self._config.token_label!r} is "
                "extractable or not sensitive; Bastion refuses it. Create a new non-extractable "
                "AES-256 key under another label and point kek_label at it."
            )
        if values[Attribute.VALUE_LEN] != DATA_KEY_BYTES:
            raise KeyPolicyError(
                f"the KEK {self._config.kek_label!r} is {values[Attribute.VALUE_LEN] * 8} bits; "
                "Bastion needs AES-256"
            )

    def kek_id(self, label: str | None = None) -> str:
        """The KEK's CKA_ID in hex (recorded next to every blob it encrypts)."""
        label = label or self._config.kek_label
        with self._login.lock, translate_pkcs11("read the KEK id", key=label):
            kek = self._require(ObjectClass.SECRET_KEY, KeyType.AES, label)
            return bytes(kek[Attribute.ID]).hex()

    # -- KEK encryption -------------------------------------------------------------------

    def kek_encrypt(self, plaintext: bytes | bytearray, *, aad: bytes) -> WrappedKey:
        """AES-256-GCM encrypt ``plaintext`` under the KEK inside the HSM, binding ``aad``."""
        cfg = self._config
        nonce = os.urandom(_GCM_NONCE)
        with (
            self._login.lock,
            translate_pkcs11("encrypt under the KEK", token=cfg.token_label, key=cfg.kek_label),
        ):
            kek = self._require(ObjectClass.SECRET_KEY, KeyType.AES, cfg.kek_label)
            kek_id = bytes(kek[Attribute.ID]).hex()
            ciphertext = kek.encrypt(
                bytes(plaintext),
                mechanism=Mechanism.AES_GCM,
                mechanism_param=GCMParams(nonce, aad),
            )
        return WrappedKey(_WRAP_MECHANISM, cfg.kek_label, kek_id, nonce + bytes(ciphertext))

    def kek_decrypt_plaintext(self, wrapped: WrappedKey, *, aad: bytes) -> bytearray:
        """Decrypt a blob made by :meth:`kek_encrypt`. Returns PLAINTEXT in a bytearray the
        caller should zero (``buf[:] = bytes(len(buf))``) when done."""
        token = self._config.token_label
        if wrapped.mechanism != _WRAP_MECHANISM:
            raise UnwrapError(
                f"blob was encrypted with {wrapped.mechanism!r}; this build reads only "
                f"{_WRAP_MECHANISM}"
            )
        if len(wrapped.blob) < _GCM_NONCE + _GCM_TAG:
            raise UnwrapError(f"wrapped blob is {len(wrapped.blob)} bytes: too short")
        with (
            self._login.lock,
            translate_pkcs11("decrypt under the KEK", token=token, key=wrapped.kek_label),
        ):
            kek = self._require(ObjectClass.SECRET_KEY, KeyType.AES, wrapped.kek_label)
            kek_id = bytes(kek[Attribute.ID]).hex()
            if kek_id != wrapped.kek_id:
                raise UnwrapError(
                    f"the blob was encrypted under KEK id {wrapped.kek_id}, but key "
                    f"{wrapped.kek_label!r} on token {token!r} has id {kek_id}: wrong token, or "
                    "the KEK was replaced"
                )
            nonce, body = wrapped.blob[:_GCM_NONCE], wrapped.blob[_GCM_NONCE:]
            plain = kek.decrypt(
                body, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad)
            )
        return bytearray(plain)

    def wrap_data_key(self, data_key: bytes | bytearray, *, aad: bytes) -> WrappedKey:
        """Wrap a 32-byte data key under the KEK (AES-GCM in the HSM; see the package doc)."""
        if len(data_key) != DATA_KEY_BYTES:
            raise HSMOperationError(
                f"data key is {len(data_key)} bytes; AES-256 data keys are {DATA_KEY_BYTES}"
            )
        return self.kek_encrypt(data_key, aad=aad)

    def unwrap_data_key_plaintext(self, wrapped: WrappedKey, *, aad: bytes) -> bytearray:
        """Unwrap a data key into process memory (PLAINTEXT key bytes; zero them after use)."""
        key = self.kek_decrypt_plaintext(wrapped, aad=aad)
        if len(key) != DATA_KEY_BYTES:
            raise UnwrapError(f"unwrapped data key is {len(key)} bytes, not {DATA_KEY_BYTES}")
        return key

    # -- signing --------------------------------------------------------------------------

    def signer(self) -> HsmSigner:
        """An ECDSA P-256 signer on the configured signing key (``pki.signing.Signer``)."""
        from pki.hsm._signer import HsmSigner

        return HsmSigner(self)

    def _public_key_der(self, label: str) -> bytes:
        with self._login.lock, translate_pkcs11("read the public key", key=label):
            public = self._require(ObjectClass.PUBLIC_KEY, KeyType.EC, label)
            return bytes(encode_ec_public_key(public))

    def _sign_digest_raw(self, label: str, digest: bytes) -> bytes:
        """CKM_ECDSA over a SHA-256 digest: the raw r ‖ s signature (64 bytes)."""
        with self._login.lock, translate_pkcs11("sign", token=self._config.token_label, key=label):
            private = self._require(ObjectClass.PRIVATE_KEY, KeyType.EC, label)
            return bytes(private.sign(digest, mechanism=Mechanism.ECDSA))
