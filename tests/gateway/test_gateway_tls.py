"""The TLS edge: real handshakes on 127.0.0.1 with certificates from the internal CA."""

from __future__ import annotations

import datetime as dt
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki.ca import CA
from pki.secret import Secret
from tests.fixtures.pki import CertPair, TestPKI
from tests.gateway.conftest import RunningGateway

CHAT = {"model": "chat-default", "messages": [{"role": "user", "content": "hello"}]}
NOW = dt.datetime.now(dt.UTC)


def _refused(
    gateway: RunningGateway, cert: CertPair | None, context: ssl.SSLContext | None = None
) -> bool:
    """True if the connection (or the request on it) is refused at the TLS layer."""
    verify = context or gateway.ssl_context(cert)
    try:
        with httpx2.Client(base_url=gateway.url, verify=verify, timeout=10) as client:
            client.get("/v1/models")
    except (httpx2.ConnectError, httpx2.ReadError, httpx2.RemoteProtocolError, ssl.SSLError):
        return True
    return False


def _spiffe(path: str, domain: str = "bastion.internal") -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(f"spiffe://{domain}/{path}")


def test_valid_client_certificate_gets_200(gateway: RunningGateway, billing: CertPair) -> None:
    """A certificate issued by the CA for an authorized SPIFFE ID gets an answer."""
    with gateway.client(billing) as client:
        response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "hello"


def test_tls_13_is_negotiated(gateway: RunningGateway, billing: CertPair) -> None:
    """TLS 1.3 is preferred when the client supports it."""
    context = gateway.ssl_context(billing)
    with (
        httpx2.Client(base_url=gateway.url, verify=context) as client,
        client.stream("GET", "/healthz") as r,
    ):
        ssl_object = r.extensions["network_stream"].get_extra_info("ssl_object")
        assert ssl_object.version() == "TLSv1.3"


def test_no_client_certificate_is_refused(gateway: RunningGateway) -> None:
    """Without a client certificate the handshake fails, and the failure is counted by reason."""
    assert _refused(gateway, None)
    metrics = httpx2.get(gateway.ops_url + "/metrics").text
    assert 'bastion_tls_handshake_failures_total{reason="certificate_required"} 1.0' in metrics


def test_self_signed_certificate_is_refused(gateway: RunningGateway, test_pki: TestPKI) -> None:
    """A self-signed certificate with a plausible SPIFFE ID does not chain to the CA."""
    own_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "selfsigned")])
    pair = test_pki.custom(
        "selfsigned",
        sans=[_spiffe("svc/billing")],
        eku=[ExtendedKeyUsageOID.CLIENT_AUTH],
        signer_key=own_key,
        issuer=name,
    )
    # A self-signed cert: subject == issuer, signed by its own key. custom() signs with signer_key
    # but uses a fresh key for the subject; the chain check fails either way.
    assert _refused(gateway, pair)


def test_certificate_from_another_ca_is_refused(gateway: RunningGateway, tmp_path: Path) -> None:
    """A certificate from a different CA (same trust domain name) is refused."""
    other = CA.init(tmp_path / "other", passphrase=Secret("another-passphrase-123"))
    issued = other.issue_client(["spiffe://bastion.internal/svc/billing"])
    cert, key = issued.write(tmp_path / "other-client")
    assert _refused(gateway, CertPair(cert, key))
    metrics = httpx2.get(gateway.ops_url + "/metrics").text
    assert 'bastion_tls_handshake_failures_total{reason="unknown_ca"} 1.0' in metrics


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [
        (NOW - dt.timedelta(days=10), NOW - dt.timedelta(days=1)),
        (NOW + dt.timedelta(days=1), NOW + dt.timedelta(days=10)),
    ],
    ids=["expired", "not-yet-valid"],
)
def test_certificate_outside_validity_is_refused(
    gateway: RunningGateway, test_pki: TestPKI, not_before: dt.datetime, not_after: dt.datetime
) -> None:
    """Expired and not-yet-valid certificates fail chain verification."""
    pair = test_pki.custom(
        f"validity-{not_before.timestamp():.0f}",
        sans=[_spiffe("svc/billing")],
        eku=[ExtendedKeyUsageOID.CLIENT_AUTH],
        not_before=not_before,
        not_after=not_after,
    )
    assert _refused(gateway, pair)


def test_server_auth_only_certificate_is_refused(
    gateway: RunningGateway, test_pki: TestPKI
) -> None:
    """A certificate whose EKU allows only serverAuth cannot authenticate a client."""
    pair = test_pki.custom(
        "serveronly", sans=[_spiffe("svc/billing")], eku=[ExtendedKeyUsageOID.SERVER_AUTH]
    )
    assert _refused(gateway, pair)


@pytest.mark.parametrize(
    ("name", "sans", "ca_flag", "expected"),
    [
        ("two-sans", [_spiffe("svc/billing"), _spiffe("svc/admin")], False, "exactly one URI SAN"),
        ("no-uri-san", [x509.DNSName("billing.internal")], False, "exactly one URI SAN"),
        ("foreign-domain", [_spiffe("svc/billing", "evil.example")], False, "trust domain"),
        (
            "not-spiffe",
            [x509.UniformResourceIdentifier("https://bastion.internal/svc")],
            False,
            "SPIFFE",
        ),
        ("ca-as-client", [_spiffe("svc/billing")], True, "CA certificate"),
    ],
    ids=[
        "two-spiffe-sans",
        "no-uri-san",
        "foreign-trust-domain",
        "uri-not-spiffe",
        "ca-cert-as-client",
    ],
)
def test_unacceptable_identity_is_refused(
    gateway: RunningGateway,
    test_pki: TestPKI,
    name: str,
    sans: list[x509.GeneralName],
    ca_flag: bool,
    expected: str | None,
) -> None:
    """A chain-valid certificate that is not one clear SPIFFE identity gets no answer but a 401 or a refused handshake."""
    pair = test_pki.custom(name, sans=sans, eku=[ExtendedKeyUsageOID.CLIENT_AUTH], ca_flag=ca_flag)
    try:
        with gateway.client(pair) as client:
            response = client.post("/v1/chat/completions", json=CHAT)
    except (httpx2.ConnectError, httpx2.ReadError, httpx2.RemoteProtocolError):
        pytest.fail("the handshake was refused; the gateway should answer 401 with the reason")
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "invalid_client_certificate"
    assert expected is not None
    assert expected in error["message"]


def test_the_ca_certificate_itself_is_refused_as_client(
    gateway: RunningGateway, test_pki: TestPKI
) -> None:
    """Presenting the CA's own certificate and key as a client identity is refused."""
    from cryptography.hazmat.primitives import serialization

    from pki.ca import FileCASigner

    signer = FileCASigner.load(test_pki.directory / "ca.key", Secret("test-passphrase-0123456789"))
    key_path = test_pki.directory / "ca-plain.key"
    key_path.write_bytes(
        signer._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pair = CertPair(test_pki.ca_cert, key_path)
    try:
        with gateway.client(pair) as client:
            response = client.get("/v1/models")
    except (httpx2.ConnectError, httpx2.ReadError, httpx2.RemoteProtocolError):
        return  # refused during the handshake
    assert response.status_code == 401
    assert "CA certificate" in response.json()["error"]["message"]


@pytest.mark.filterwarnings(
    "ignore:ssl.TLSVersion.TLSv1:DeprecationWarning"
)  # on purpose: an old client
def test_tls_11_is_refused(gateway: RunningGateway, billing: CertPair) -> None:
    """A client limited to TLS 1.1 cannot complete a handshake."""
    context = gateway.ssl_context(billing)
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("ALL:@SECLEVEL=0")
    assert _refused(gateway, billing, context)


def test_openssl_client_at_tls_11_is_refused(
    gateway: RunningGateway, billing: CertPair, test_pki: TestPKI
) -> None:
    """The same with the openssl command-line client (independent of Python's ssl settings)."""
    result = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{gateway.server.port}",
            "-tls1_1",
            "-cert",
            str(billing.cert),
            "-key",
            str(billing.key),
            "-CAfile",
            str(test_pki.ca_cert),
        ],
        input=b"",
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert result.returncode != 0 or b"Cipher is (NONE)" in result.stdout


def test_revoked_certificate_is_refused_without_restart(
    gateway: RunningGateway, test_pki: TestPKI
) -> None:
    """After revoke + CRL update, new connections with that certificate are refused; others still work."""
    victim = test_pki.client("svc/victim")
    other = test_pki.client("svc/other")
    with gateway.client(victim) as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    serial = format(x509.load_pem_x509_certificate(victim.cert.read_bytes()).serial_number, "x")
    ca = CA.open(test_pki.directory, passphrase=Secret("test-passphrase-0123456789"))
    time.sleep(0.01)  # a distinct mtime for the new CRL
    ca.revoke(serial, reason="key_compromise")
    assert _refused(gateway, victim)
    with gateway.client(other) as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    metrics = httpx2.get(gateway.ops_url + "/metrics").text
    assert 'bastion_tls_refused_connections_total{reason="revoked"}' in metrics


def test_unauthorized_identity_gets_403(gateway: RunningGateway, test_pki: TestPKI) -> None:
    """A valid identity outside the authorization rules gets 403 in the OpenAI error shape, for
    the listing too (issue 14: it was 200 with an empty list)."""
    intruder = test_pki.client("team/intruder")
    with gateway.client(intruder) as client:
        response = client.post("/v1/chat/completions", json=CHAT)
        models = client.get("/v1/models")
    assert response.status_code == 403
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.json()["error"]["code"] == "model_not_permitted"
    assert models.status_code == 403
    assert models.json()["error"]["code"] == "identity_not_authorized"


def test_models_lists_only_permitted_aliases(
    gateway: RunningGateway, billing: CertPair, issue_client: Callable[..., CertPair]
) -> None:
    """GET /v1/models shows each identity only the aliases it may use."""
    admin = issue_client("svc/admin")
    with gateway.client(billing) as client:
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["chat-default"]
    with gateway.client(admin) as client:
        assert sorted(m["id"] for m in client.get("/v1/models").json()["data"]) == [
            "chat-default",
            "restricted",
        ]
