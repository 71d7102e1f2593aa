"""The HSM-backed secret store: stored, resolved, bound to their names, never shown."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway.config import SecretStoreConfig
from gateway.secrets import (
    HsmSecretStore,
    SecretNotFoundError,
    SecretStore,
    SecretStoreError,
    open_secret_store,
    resolve_secret_ref,
)
from pki.hsm import HsmSession, HsmSettings
from pki.secret import Secret
from tests.fixtures.softhsm import SoftHsm

pytestmark = pytest.mark.hsm

VALUE = "sk-live-5f1e2d3c4b5a69788796a5b4c3d2e1f0"


@pytest.fixture
def store(hsm_session: HsmSession, tmp_path: Path) -> HsmSecretStore:
    store = HsmSecretStore(tmp_path / "secrets.enc.json", hsm_session)
    store.put("openai", Secret(VALUE))
    store.put("ubiai-token", Secret("tok-ubiai-0001"))
    return store


def test_put_get_and_names(store: HsmSecretStore) -> None:
    """Stored values come back intact and names() lists names only."""
    assert isinstance(store, SecretStore)
    assert store.get("openai").reveal() == VALUE
    assert store.names() == ["openai", "ubiai-token"]


def test_value_never_in_file_repr_or_logs(
    store: HsmSecretStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The value is in neither the store file, the reprs, nor any log record."""
    caplog.set_level(logging.DEBUG)
    secret = store.get("openai")
    store.put("again", Secret(VALUE))
    assert VALUE not in store.path.read_text()
    assert VALUE.encode().hex() not in store.path.read_text()
    assert VALUE not in repr(store) + repr(secret) + str(secret) + f"{secret}"
    assert VALUE not in caplog.text
    assert oct(store.path.stat().st_mode & 0o777) == oct(0o600)


def test_values_are_bound_to_their_names(store: HsmSecretStore) -> None:
    """A ciphertext moved under another name in the file does not decrypt."""
    doc = json.loads(store.path.read_text())
    doc["entries"]["ubiai-token"] = doc["entries"]["openai"]
    store.path.write_text(json.dumps(doc))
    with pytest.raises(SecretStoreError, match="cannot be decrypted"):
        store.get("ubiai-token")


def test_other_token_cannot_read(store: HsmSecretStore, softhsm: SoftHsm) -> None:
    """The store file is useless on a token with another KEK."""
    with (
        HsmSession(softhsm.other_config) as other,
        pytest.raises(SecretStoreError, match="KEK id"),
    ):
        HsmSecretStore(store.path, other).get("openai")


@pytest.mark.parametrize(
    ("ref", "error", "words"),
    [
        ("secret:missing", SecretNotFoundError, "bastion secrets put missing"),
        ("sk-plain-value", SecretStoreError, "never written in config"),
        ("secret:../etc", SecretStoreError, "invalid"),
    ],
    ids=["unknown-name", "plain-value", "bad-name"],
)
def test_resolve_refusals(
    store: HsmSecretStore, ref: str, error: type[SecretStoreError], words: str
) -> None:
    """Unknown names, plain values and malformed names are refused without echoing values."""
    with pytest.raises(error, match=words) as info:
        resolve_secret_ref(ref, store)
    assert "sk-plain-value" not in str(info.value)


def test_resolve_and_open_from_gateway_config(store: HsmSecretStore, softhsm: SoftHsm) -> None:
    """open_secret_store opens the store of the typed secrets/hsm sections and resolves
    secret:NAME; without a secrets section it says what to add."""
    hsm = HsmSettings(
        module=softhsm.token.module,
        token=softhsm.token.token_label,
        pin_file=softhsm.token.pin_file,
    )
    config = SimpleNamespace(secrets=SecretStoreConfig(file=store.path), hsm=hsm)
    opened = open_secret_store(config)  # type: ignore[arg-type]
    assert resolve_secret_ref("secret:openai", opened).reveal() == VALUE
    with pytest.raises(SecretStoreError, match=r"add 'secrets: \{file: PATH\}'"):
        open_secret_store(SimpleNamespace(secrets=None, hsm=hsm))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("ok", "", "empty"),
        ("ok", "x" * (64 * 1024 + 1), "limit"),
        ("has space", "v", "invalid"),
    ],
    ids=["empty", "too-large", "bad-name"],
)
def test_put_refusals(store: HsmSecretStore, name: str, value: str, words: str) -> None:
    """put refuses empty or oversized values and malformed names."""
    with pytest.raises(SecretStoreError, match=words):
        store.put(name, Secret(value))


def test_delete(store: HsmSecretStore) -> None:
    """delete removes a name; deleting it again is an error."""
    store.delete("openai")
    assert store.names() == ["ubiai-token"]
    with pytest.raises(SecretNotFoundError):
        store.delete("openai")
