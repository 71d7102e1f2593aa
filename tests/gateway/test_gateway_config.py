"""The gateway config is one typed tree: every section refuses unknown keys with file:line:col,
and every path in it is resolved once, relative to the config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import AuditConfig, GatewayConfig, HsmSettings, load_config
from gateway.errors import ConfigError

# A complete config that loads; each case below misspells one key in one section. The line of
# each key is fixed by this text, so each case names the line the error must point at.
BASE = """\
server:
  port: 8443
tls:
  cert: tls/server.crt
  key: tls/server.key
  ca: pki/ca.crt
limits:
  max_body_bytes: 1048576
upstreams:
  worker:
    kind: onprem
    base_url: https://127.0.0.1:8600/v1
    timeout:
      read: 60
    circuit:
      failure_threshold: 5
    tls:
      ca: pki/ca.crt
  ubi:
    kind: managed
    type: ubiai
    base_url: https://ubiai.example/api/
    api_key: {env: UBIAI_TOKEN}
    ubiai:
      monitor_model: true
models:
  chat-default:
    upstream: worker
authorization:
  - identity: "spiffe://bastion.internal/svc/*"
    models: [chat-default]
rate_limits:
  - identity: "spiffe://bastion.internal/svc/*"
    requests_per_minute: 60
policy:
  file: policies/default.yaml
audit:
  backend: sqlite
  path: audit/bastion.db
  digest_key_file: audit/digest.key
  retired_public_keys: [audit/old.pub]
signing:
  key_file: audit/signing.key
tracing:
  exporter: none
hsm:
  module: lib/libsofthsm2.so
  token: bastion-dev
  pin_file: hsm/user.pin
secrets:
  file: secrets.enc.json
"""

# (id, a line of BASE, the same line misspelled, the misspelled key, its section in the message)
MISSPELLED = [
    ("server", "  port: 8443", "  prot: 8443", "prot", "server"),
    ("tls", "  ca: pki/ca.crt\nlimits", "  cq: pki/ca.crt\nlimits", "cq", "tls"),
    ("limits", "  max_body_bytes:", "  max_body_byte:", "max_body_byte", "limits"),
    ("upstream", "    kind: onprem", "    knd: onprem", "knd", "upstreams.worker"),
    ("upstream-timeout", "      read: 60", "      raed: 60", "raed", "upstreams.worker.timeout"),
    (
        "upstream-circuit",
        "      failure_threshold:",
        "      failure_treshold:",
        "failure_treshold",
        "upstreams.worker.circuit",
    ),
    (
        "upstream-tls",
        "      ca: pki/ca.crt",
        "      cafile: pki/ca.crt",
        "cafile",
        "upstreams.worker.tls",
    ),
    ("api-key", "{env: UBIAI_TOKEN}", "{evn: UBIAI_TOKEN}", "evn", "upstreams.ubi.api_key"),
    (
        "ubiai",
        "      monitor_model:",
        "      monitor_modle:",
        "monitor_modle",
        "upstreams.ubi.ubiai",
    ),
    ("model", "    upstream: worker", "    upstrem: worker", "upstrem", "models.chat-default"),
    ("authorization", "    models: [chat", "    modles: [chat", "modles", "authorization[0]"),
    (
        "rate-limits",
        "    requests_per_minute:",
        "    request_per_minute:",
        "request_per_minute",
        "rate_limits[0]",
    ),
    ("policy", "  file: policies/", "  fil: policies/", "fil", "policy"),
    ("audit", "  digest_key_file:", "  digest_key_fil:", "digest_key_fil", "audit"),
    (
        "signing",
        "  key_file: audit/signing.key",
        "  keyfile: audit/signing.key",
        "keyfile",
        "signing",
    ),
    ("tracing", "  exporter: none", "  exportr: none", "exportr", "tracing"),
    ("hsm", "  token: bastion-dev", "  tokn: bastion-dev", "tokn", "hsm"),
    ("secrets", "  file: secrets.enc.json", "  fiel: secrets.enc.json", "fiel", "secrets"),
    ("top-level", "\nsecrets:\n", "\nsecret:\n", "secret", "(top level)"),
]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_base_config_loads(tmp_path: Path) -> None:
    """The table's starting point is valid, so each case below fails for its one typo only."""
    config = load_config(_write(tmp_path, BASE))
    assert isinstance(config, GatewayConfig)
    assert isinstance(config.audit, AuditConfig)
    assert isinstance(config.hsm, HsmSettings)


@pytest.mark.parametrize(
    ("written", "typo", "bad_key", "section"),
    [case[1:] for case in MISSPELLED],
    ids=[case[0] for case in MISSPELLED],
)
def test_serve_check_refuses_a_misspelled_key_with_its_position(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    written: str,
    typo: str,
    bad_key: str,
    section: str,
) -> None:
    """`bastion serve --check` exits 1 naming file:line:col of the misspelled key, the key and
    its section; it never says OK."""
    assert BASE.count(written) == 1
    text = BASE.replace(written, typo)
    path = _write(tmp_path, text)
    rows = text.splitlines()
    line = next(i for i, row in enumerate(rows, 1) if f"{bad_key}:" in row.replace("{", " "))
    col = rows[line - 1].index(bad_key) + 1
    code = main(["serve", "--config", str(path), "--check"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "OK" not in out
    assert f"{path}:{line}:{col}: unknown key '{bad_key}' at {section}" in err


def test_a_section_rule_is_reported_at_its_section(tmp_path: Path) -> None:
    """A rule across keys of one section (sqlite needs a path) points at that section."""
    text = BASE.replace("  path: audit/bastion.db\n", "")
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, text))
    line = text.splitlines().index("audit:") + 1
    assert f"gateway.yaml:{line}:1: audit:" in str(caught.value)
    assert "audit.path is not set" in str(caught.value)


def test_every_path_is_resolved_once_against_the_config_file(tmp_path: Path) -> None:
    """Relative paths of every section, audit, hsm and secrets included, are absolute after
    loading and relative to the config file's folder, whatever the working directory."""
    site = tmp_path / "site"
    site.mkdir()
    config = load_config(_write(site, BASE))
    assert config.audit is not None
    assert config.hsm is not None
    assert config.secrets is not None
    expected = {
        "tls.cert": (config.tls.cert, "tls/server.crt"),
        "upstreams.worker.tls.ca": (config.upstreams["worker"].tls.ca, "pki/ca.crt"),
        "policy.file": (config.policy.file if config.policy else None, "policies/default.yaml"),
        "audit.path": (config.audit.path, "audit/bastion.db"),
        "audit.digest_key_file": (config.audit.digest_key_file, "audit/digest.key"),
        "audit.retired_public_keys": (config.audit.retired_public_keys[0], "audit/old.pub"),
        "signing.key_file": (config.signing.key_file, "audit/signing.key"),
        "hsm.module": (config.hsm.module, "lib/libsofthsm2.so"),
        "hsm.pin_file": (config.hsm.pin_file, "hsm/user.pin"),
        "secrets.file": (config.secrets.file, "secrets.enc.json"),
    }
    wrong = {k: v for k, (v, rel) in expected.items() if v != (site / rel).resolve()}
    assert wrong == {}


def test_an_absolute_path_is_kept(tmp_path: Path) -> None:
    """An absolute path (the system's SoftHSM2 module) is taken as written."""
    text = BASE.replace("module: lib/libsofthsm2.so", "module: /usr/lib/softhsm/libsofthsm2.so")
    config = load_config(_write(tmp_path, text))
    assert config.hsm is not None
    assert config.hsm.module == Path("/usr/lib/softhsm/libsofthsm2.so")


def test_config_is_frozen(tmp_path: Path) -> None:
    """A loaded section cannot be changed afterwards."""
    config = load_config(_write(tmp_path, BASE))
    assert config.audit is not None
    with pytest.raises(ValueError, match="frozen"):
        config.audit.max_batch = 1  # type: ignore[misc]


# (id, text replacing a line of BASE, the line the error must point at, words of the message)
YAML_PROBLEMS = [
    ("syntax", ("  port: 8443", "  port: [8443"), "YAML error"),
    ("duplicate-key", ("  port: 8443", "  port: 8443\n  port: 9443"), "found duplicate key"),
    ("key-written-in", ("{env: UBIAI_TOKEN}", "sk-live-abc"), "must be a reference"),
]


@pytest.mark.parametrize(
    ("change", "words"), [c[1:] for c in YAML_PROBLEMS], ids=[c[0] for c in YAML_PROBLEMS]
)
def test_yaml_problems_are_reported_at_their_position(
    tmp_path: Path, change: tuple[str, str], words: str
) -> None:
    """Syntax errors, duplicate keys and a key written into the file are refused with
    file:line:col (the shared loader of config, policies and worker configs), never a
    traceback, and the value is not echoed."""
    text = BASE.replace(*change)
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:")
    line = int(message.split(":")[1])
    last = change[1].split("\n")[-1]
    changed = next(i for i, row in enumerate(text.splitlines(), 1) if last in row)
    # A parser notices an unclosed bracket where the next token is: the changed line or the next.
    assert line in (changed, changed + 1)
    assert words in message
    assert "sk-live-abc" not in message


def test_a_secret_reference_names_exactly_one_source(tmp_path: Path) -> None:
    """{env, file} together is refused at the reference, naming both (and neither value)."""
    text = BASE.replace("{env: UBIAI_TOKEN}", "{env: UBIAI_TOKEN, file: token.txt}")
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, text))
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "api_key:" in row)
    assert f"gateway.yaml:{line}:5: upstreams.ubi.api_key:" in str(caught.value)
    assert "exactly one of env, file, store (given: env, file)" in str(caught.value)
