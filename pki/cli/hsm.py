"""``bastion hsm``: create or check the HSM token and Bastion's keys; show their status.

``init --dir DIR`` (development) creates a SoftHSM2 token in DIR with its own softhsm2.conf, PINs
in 0600 files (or from BASTION_HSM_PIN / BASTION_HSM_SO_PIN) and the keys, and prints the
environment to use it. ``init --token LABEL`` (production) logs in to an existing token, creates
missing keys and changes nothing that exists. ``status`` shows the token and which keys exist.

The ``--hsm-*`` options (or ``BASTION_HSM_*`` variables) are shared with ``bastion model`` and
``bastion secrets`` through :func:`add_hsm_options` and :func:`hsm_config_from_args`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pki.hsm import (
    DEFAULT_KEK_LABEL,
    DEFAULT_SIGNING_KEY_LABEL,
    ENV_MODULE,
    ENV_PIN,
    ENV_PIN_FILE,
    ENV_TOKEN,
    HsmConfig,
    HSMConfigError,
    HsmSettings,
)

__all__ = ["add_hsm_options", "hsm_config_from_args", "register"]

ENV_SO_PIN = "BASTION_HSM_SO_PIN"


def add_hsm_options(parser: argparse.ArgumentParser) -> None:
    """``--hsm-module/--hsm-token/--hsm-pin-file/--hsm-pin-env``, defaulting to BASTION_HSM_*."""
    group = parser.add_argument_group("HSM (default: the BASTION_HSM_* environment)")
    group.add_argument("--hsm-module", type=Path, help=f"PKCS#11 library (env {ENV_MODULE})")
    group.add_argument("--hsm-token", metavar="LABEL", help=f"token label (env {ENV_TOKEN})")
    pins = group.add_mutually_exclusive_group()
    pins.add_argument("--hsm-pin-file", type=Path, help=f"user PIN file (env {ENV_PIN_FILE})")
    pins.add_argument("--hsm-pin-env", metavar="VAR", help=f"variable holding the PIN ({ENV_PIN})")
    group.add_argument("--kek-label", default=DEFAULT_KEK_LABEL)
    group.add_argument("--signing-key-label", default=DEFAULT_SIGNING_KEY_LABEL)


def hsm_config_from_args(args: argparse.Namespace) -> HsmConfig:
    """Resolve the HSM config from the ``--hsm-*`` options, falling back to the environment."""
    env = os.environ
    token = args.hsm_token or env.get(ENV_TOKEN)
    if not token:
        raise HSMConfigError(f"no token named: give --hsm-token or set {ENV_TOKEN}")
    pin_file = args.hsm_pin_file
    pin_env = args.hsm_pin_env
    if pin_file is None and pin_env is None:
        if env.get(ENV_PIN_FILE):
            pin_file = Path(env[ENV_PIN_FILE])
        else:
            pin_env = ENV_PIN
    module = args.hsm_module or (Path(env[ENV_MODULE]) if env.get(ENV_MODULE) else None)
    settings = HsmSettings(
        **({"module": module} if module is not None else {}),
        token=token,
        pin_file=pin_file,
        pin_env=pin_env,
        kek_label=args.kek_label,
        signing_key_label=args.signing_key_label,
    )
    return settings.resolve()


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("hsm", help="HSM token and keys: init, status")
    sub = parser.add_subparsers(dest="hsm_command", metavar="ACTION", required=True)

    init = sub.add_parser(
        "init",
        help="create a dev SoftHSM2 token (--dir) or check a token and create missing keys",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("--dir", type=Path, help="development: create a SoftHSM2 token here")
    init.add_argument("--label", default="bastion-dev", help="with --dir: the token label")
    add_hsm_options(init)
    init.set_defaults(func=_init)

    status = sub.add_parser("status", help="token info and which keys exist (never values)")
    add_hsm_options(status)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)


def _init(args: argparse.Namespace) -> int:
    if args.dir is not None:
        return _init_dev(args)
    from pki.hsm import HsmSession

    config = hsm_config_from_args(args)
    with HsmSession(config) as session:
        created = session.ensure_keys()
        inventory = session.key_inventory()
    for key in inventory:
        state = "created" if key.role.split("-")[0] in created else "present"
        print(f"{key.role:16} {key.label:24} {state}  id={key.key_id}")
    print("nothing changed" if not created else f"created: {', '.join(created)}")
    return 0


def _init_dev(args: argparse.Namespace) -> int:
    from pki.hsm import DEFAULT_SOFTHSM_MODULE, create_softhsm_token
    from pki.secret import Secret

    user_pin = Secret(os.environ[ENV_PIN]) if os.environ.get(ENV_PIN) else None
    so_pin = Secret(os.environ[ENV_SO_PIN]) if os.environ.get(ENV_SO_PIN) else None
    token = create_softhsm_token(
        args.dir,
        label=args.label,
        module=args.hsm_module or DEFAULT_SOFTHSM_MODULE,
        user_pin=user_pin,
        so_pin=so_pin,
        kek_label=args.kek_label,
        signing_key_label=args.signing_key_label,
    )
    print(f"# SoftHSM2 token {token.token_label!r} created in {token.directory} with keys")
    print(f"# {token.kek_label} (AES-256, non-extractable) and {token.signing_key_label} (P-256)")
    print(f"# user PIN in {token.pin_file}, SO PIN in {token.so_pin_file} (mode 0600)")
    for name, value in token.env().items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from pki.hsm import HsmSession

    config = hsm_config_from_args(args)
    with HsmSession(config) as session:
        info = session.token_info()
        keys = session.key_inventory()
    if args.json:
        print(json.dumps({"token": asdict(info), "keys": [asdict(k) for k in keys]}, indent=2))
        return 0
    print(f"token      {info.label} ({info.manufacturer} {info.model}, serial {info.serial})")
    print(f"module     {info.library}")
    needed = {"AES_GCM", "ECDSA", "EC_KEY_PAIR_GEN", "AES_KEY_GEN"}
    missing = sorted(needed - set(info.mechanisms))
    print(
        f"mechanisms {len(info.mechanisms)} offered; "
        + (f"MISSING {', '.join(missing)}" if missing else "AES-GCM and ECDSA available")
    )
    for key in keys:
        if not key.present:
            print(f"{key.role:16} {key.label:24} MISSING (run `bastion hsm init`)")
            continue
        flags = (
            ""
            if key.sensitive is None
            else (f" sensitive={key.sensitive} extractable={key.extractable}")
        )
        print(f"{key.role:16} {key.label:24} {key.key_type} id={key.key_id}{flags}")
    return 0 if all(k.present for k in keys) and not missing else 1
