"""The HSM, through PKCS#11: one place for session, key lookup, wrap/unwrap and signing.

A SoftHSM2 token in development and tests and a Luna/CloudHSM/YubiHSM module in production are the
same code path with a different module path (python-pkcs11).

Keys (labels configurable, see :class:`HsmConfig`):

- ``bastion-kek``: AES-256, sensitive, non-extractable. Data keys (model artifacts, secrets) are
  wrapped by encrypting their bytes with CKM_AES_GCM inside the HSM under this key (nonce ‖ ct ‖
  tag, with associated data naming what the key is for). AES-GCM rather than CKM_AES_KEY_WRAP
  because the data key must be usable in process memory (to decrypt weights at GB/s), and most
  modules refuse to unwrap into a non-sensitive key object; SoftHSM 2.6 also cannot pad-wrap
  raw bytes (CKM_AES_KEY_WRAP_PAD).
- ``bastion-ca``: the internal CA's ECDSA P-256 key pair (``bastion pki init --hsm``);
  :class:`HsmCASigner` signs certificates and CRLs with it.
- ``bastion-signing``: ECDSA P-256 key pair; :class:`HsmSigner` signs SHA-256 digests with
  CKM_ECDSA and returns DER, verifiable with ``cryptography`` (:func:`verify_ecdsa_p256_sha256`).

Exceptions (every PKCS#11 exception is translated at this boundary by ``translate_pkcs11``)::

    BastionError
     └── HSMError                        anything the HSM layer refuses
          ├── HSMConfigError             config incomplete, PIN source unreadable, bad label
          ├── ModuleLoadError            the PKCS#11 library is missing or cannot be loaded
          ├── TokenNotFoundError         no token with that label (check SOFTHSM2_CONF / slot)
          ├── PinError                   PIN wrong, locked, expired
          ├── KeyMissingError            a key label not on the token (run `bastion hsm init`)
          ├── KeyPolicyError             a key with refused attributes (extractable KEK, duplicates)
          ├── MechanismNotSupportedError the module lacks AES-GCM / ECDSA
          └── HSMOperationError          any other PKCS#11 failure
               └── UnwrapError           blob did not authenticate: wrong KEK/token, or altered
"""

from __future__ import annotations

from pki.hsm._ca_signer import DEFAULT_CA_KEY_LABEL, HsmCASigner
from pki.hsm._config import (
    DEFAULT_KEK_LABEL,
    DEFAULT_SIGNING_KEY_LABEL,
    DEFAULT_SOFTHSM_MODULE,
    ENV_MODULE,
    ENV_PIN,
    ENV_PIN_FILE,
    ENV_TOKEN,
    HsmConfig,
    HsmSettings,
)
from pki.hsm._errors import (
    HSMConfigError,
    HSMError,
    HSMOperationError,
    KeyMissingError,
    KeyPolicyError,
    MechanismNotSupportedError,
    ModuleLoadError,
    PinError,
    TokenNotFoundError,
    UnwrapError,
)
from pki.hsm._session import DATA_KEY_BYTES, HsmSession, KeyInfo, TokenInfo, WrappedKey
from pki.hsm._signer import ECDSA_P256_SHA256, HsmSigner, verify_ecdsa_p256_sha256
from pki.hsm._softhsm import (
    SOFTHSM_CONF_ENV,
    SoftHsmToken,
    create_softhsm_token,
    write_softhsm_conf,
)

__all__ = [
    "DATA_KEY_BYTES",
    "DEFAULT_CA_KEY_LABEL",
    "DEFAULT_KEK_LABEL",
    "DEFAULT_SIGNING_KEY_LABEL",
    "DEFAULT_SOFTHSM_MODULE",
    "ECDSA_P256_SHA256",
    "ENV_MODULE",
    "ENV_PIN",
    "ENV_PIN_FILE",
    "ENV_TOKEN",
    "SOFTHSM_CONF_ENV",
    "HSMConfigError",
    "HSMError",
    "HSMOperationError",
    "HsmCASigner",
    "HsmConfig",
    "HsmSession",
    "HsmSettings",
    "HsmSigner",
    "KeyInfo",
    "KeyMissingError",
    "KeyPolicyError",
    "MechanismNotSupportedError",
    "ModuleLoadError",
    "PinError",
    "SoftHsmToken",
    "TokenInfo",
    "TokenNotFoundError",
    "UnwrapError",
    "WrappedKey",
    "create_softhsm_token",
    "verify_ecdsa_p256_sha256",
    "write_softhsm_conf",
]
