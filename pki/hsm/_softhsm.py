"""Development tokens: a SoftHSM2 token in a directory of its own, with Bastion's keys.

SoftHSM2 reads ``SOFTHSM2_CONF`` once, when the library is initialised, and a process sees only the
tokens that existed then. So the token is set up in a child process (this module's ``__main__``)
with its own environment: that works whatever this process has already loaded, and PINs travel on
the child's stdin, never on a command line. ``softhsm2-util`` creates the token with throwaway PINs
which the child replaces at once with the real ones through ``C_SetPIN``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pki.hsm._config import (
    DEFAULT_KEK_LABEL,
    DEFAULT_SIGNING_KEY_LABEL,
    DEFAULT_SOFTHSM_MODULE,
    ENV_MODULE,
    ENV_PIN_FILE,
    ENV_TOKEN,
    HsmConfig,
)
from pki.hsm._errors import HSMConfigError, HSMError
from pki.secret import Secret

__all__ = ["SOFTHSM_CONF_ENV", "SoftHsmToken", "create_softhsm_token", "write_softhsm_conf"]

SOFTHSM_CONF_ENV = "SOFTHSM2_CONF"
_CONF_NAME = "softhsm2.conf"
_SETUP_TIMEOUT_S = 120


@dataclass(frozen=True, slots=True)
class SoftHsmToken:
    """A development token: where its configuration and PIN files are."""

    directory: Path
    conf: Path
    module: Path
    token_label: str
    pin_file: Path
    so_pin_file: Path
    kek_label: str = DEFAULT_KEK_LABEL
    signing_key_label: str = DEFAULT_SIGNING_KEY_LABEL

    def config(self) -> HsmConfig:
        """The resolved configuration (PIN read from the 0600 file). ``SOFTHSM2_CONF`` must
        point at :attr:`conf` in the process that opens a session."""
        pin = self.pin_file.read_text(encoding="utf-8").rstrip("\r\n")
        return HsmConfig(
            module=self.module,
            token_label=self.token_label,
            pin=Secret(pin),
            kek_label=self.kek_label,
            signing_key_label=self.signing_key_label,
        )

    def env(self) -> dict[str, str]:
        """The environment a Bastion process needs to use this token (no PIN values)."""
        return {
            SOFTHSM_CONF_ENV: str(self.conf),
            ENV_MODULE: str(self.module),
            ENV_TOKEN: self.token_label,
            ENV_PIN_FILE: str(self.pin_file),
        }


def write_softhsm_conf(directory: Path) -> Path:
    """Write ``DIR/softhsm2.conf`` with tokens under ``DIR/tokens`` (kept if it exists)."""
    directory = directory.resolve()
    tokens = directory / "tokens"
    tokens.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf = directory / _CONF_NAME
    if not conf.exists():
        conf.write_text(
            f"directories.tokendir = {tokens}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n",
            encoding="utf-8",
        )
    return conf


def _write_secret_file(path: Path, value: Secret) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise HSMConfigError(
            f"{path} already exists; a token was set up in this directory before. Use it, or "
            "choose an empty directory."
        ) from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value.reveal() + "\n")


def _existing_labels(util: str, env: dict[str, str]) -> set[str]:
    shown = subprocess.run(
        [util, "--show-slots"], env=env, capture_output=True, text=True, check=False
    )
    labels = set()
    for line in shown.stdout.splitlines():
        name, _, value = line.strip().partition(":")
        if name == "Label" and value.strip():
            labels.add(value.strip())
    return labels


def create_softhsm_token(
    directory: Path,
    *,
    label: str = "bastion-dev",
    module: Path = DEFAULT_SOFTHSM_MODULE,
    user_pin: Secret | None = None,
    so_pin: Secret | None = None,
    kek_label: str = DEFAULT_KEK_LABEL,
    signing_key_label: str = DEFAULT_SIGNING_KEY_LABEL,
) -> SoftHsmToken:
    """Create a SoftHSM2 token labelled ``label`` in ``directory`` with Bastion's keys; PINs are
    generated (or taken from the arguments) and written to ``DIR/<label>.pin`` and
    ``DIR/<label>.so-pin`` with mode 0600."""
    util = shutil.which("softhsm2-util")
    if util is None or not module.is_file():
        raise HSMConfigError(
            "SoftHSM2 is not installed (softhsm2-util or the module is missing); install the "
            "Debian package softhsm2, or use `bastion hsm init --module` with a real HSM"
        )
    directory = directory.resolve()
    conf = write_softhsm_conf(directory)
    env = {**os.environ, SOFTHSM_CONF_ENV: str(conf)}
    if label in _existing_labels(util, env):
        raise HSMConfigError(
            f"a token labelled {label!r} already exists in {directory}; choose another label or "
            "directory"
        )
    user_pin = user_pin or Secret(secrets.token_urlsafe(18))
    so_pin = so_pin or Secret(secrets.token_urlsafe(18))
    token = SoftHsmToken(
        directory=directory,
        conf=conf,
        module=module,
        token_label=label,
        pin_file=directory / f"{label}.pin",
        so_pin_file=directory / f"{label}.so-pin",
        kek_label=kek_label,
        signing_key_label=signing_key_label,
    )
    _write_secret_file(token.pin_file, user_pin)
    _write_secret_file(token.so_pin_file, so_pin)
    # Throwaway PINs: softhsm2-util only takes PINs on argv; the child replaces them at once.
    tmp_so, tmp_user = secrets.token_hex(8), secrets.token_hex(8)
    init = subprocess.run(
        [util, "--init-token", "--free", "--label", label, "--so-pin", tmp_so, "--pin", tmp_user],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if init.returncode != 0:
        raise HSMError(
            f"softhsm2-util could not create token {label!r} in {directory} "
            f"(exit {init.returncode}): {init.stderr.strip()[:300]}"
        )
    request = {
        "module": str(module),
        "label": label,
        "tmp_so": tmp_so,
        "tmp_user": tmp_user,
        "so_pin": so_pin.reveal(),
        "user_pin": user_pin.reveal(),
        "kek_label": kek_label,
        "signing_key_label": signing_key_label,
    }
    child = subprocess.run(
        [sys.executable, "-m", "pki.hsm._softhsm"],
        input=json.dumps(request),
        env={**env, "PYTHONPATH": _import_root()},
        capture_output=True,
        text=True,
        timeout=_SETUP_TIMEOUT_S,
        check=False,
    )
    if child.returncode != 0:
        raise HSMError(
            f"setting up token {label!r} failed: {child.stderr.strip().splitlines()[-1:]}"
        )
    return token


def _import_root() -> str:
    root = str(Path(__file__).resolve().parents[2])
    existing = os.environ.get("PYTHONPATH")
    return f"{root}{os.pathsep}{existing}" if existing else root


def _child_main() -> int:
    """Set the real PINs and create the keys (runs with SOFTHSM2_CONF set by the parent)."""
    import pkcs11

    from pki.hsm._session import HsmSession

    request = json.loads(sys.stdin.read())
    try:
        lib = pkcs11.lib(request["module"])
        token = lib.get_token(token_label=request["label"])
        with token.open(rw=True, so_pin=request["tmp_so"]) as so:
            so.set_pin(request["tmp_so"], request["so_pin"])
        with token.open(rw=True, user_pin=request["tmp_user"]) as user:
            user.set_pin(request["tmp_user"], request["user_pin"])
    except pkcs11.PKCS11Error as exc:
        print(f"PKCS#11 error {type(exc).__name__} while setting PINs", file=sys.stderr)
        return 1
    config = HsmConfig(
        module=Path(request["module"]),
        token_label=request["label"],
        pin=Secret(request["user_pin"]),
        kek_label=request["kek_label"],
        signing_key_label=request["signing_key_label"],
    )
    try:
        with HsmSession(config) as session:
            session.ensure_keys()
    except HSMError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
