"""Secrets the pattern recognizers used to miss (issue 13, item 5): passwords after looser cues
(``the pw for the db is …``, ``login: user / pass``, other languages), passwords that start with
``%`` or ``$``, tokened webhook URLs, secret query parameters and URL userinfo. Placeholders and
documentation examples stay unreported. Values are synthetic."""

from __future__ import annotations

import pytest

from gateway.detect import Detector, EntityGroup, entity_group
from tests.detect.conftest import find_in

FOUND = [
    # (id, text, entity type, text the finding must cover)
    ("pw-for-the-db", "the pw for the db is Hunter2!x", "PASSWORD", "Hunter2!x"),
    ("pwd-colon", "pwd: q7Vx!m2Lp", "PASSWORD", "q7Vx!m2Lp"),
    ("passwd-is", "My passwd is Zr8#kLm1q.", "PASSWORD", "Zr8#kLm1q"),
    ("pass-phrase", "the pass phrase is tulip-Orbit-93", "PASSWORD", "tulip-Orbit-93"),
    ("passcode", "Passcode: 884213.", "PASSWORD", "884213"),
    (
        "password-of-admin",
        "The password of the admin account is W1nter#2031",
        "PASSWORD",
        "W1nter#2031",
    ),
    ("password-was", "her password was Kq2#vBn8pL", "PASSWORD", "Kq2#vBn8pL"),
    (
        "password-no-separator",
        "log in with password Tr0ub4dor&3x please",
        "PASSWORD",
        "Tr0ub4dor&3x",
    ),
    ("percent-start", "password: %Tq9!xLm2w", "PASSWORD", "%Tq9!xLm2w"),
    ("dollar-start", "password = $uperS3cret!", "PASSWORD", "$uperS3cret!"),
    ("login-slash", "login: jsmith / Gr33n!Tea", "PASSWORD", "Gr33n!Tea"),
    ("login-colon", "Login: admin:Pa55w0rd!9", "PASSWORD", "Pa55w0rd!9"),
    ("credentials-are", "credentials are ops_bot / s3cr3t-K3y-77", "PASSWORD", "s3cr3t-K3y-77"),
    ("de-kennwort-lautet", "Das Kennwort lautet Sommer#2029x.", "PASSWORD", "Sommer#2029x"),
    ("pl-haslo", "hasło: Zx9!pQ2mW", "PASSWORD", "Zx9!pQ2mW"),
    ("ru-parol", "пароль: Qw3rty!98z", "PASSWORD", "Qw3rty!98z"),
    ("tr-sifre", "şifre: Mavi#Deniz77", "PASSWORD", "Mavi#Deniz77"),
    ("sv-losenord", "lösenord är Blå!Sjö42", "PASSWORD", "Blå!Sjö42"),
    (
        "slack-webhook",
        "post to https://hooks.slack.com/services/T01ABCDEF/B02GHIJKL/q8Xv2NbT7mKp0LzR4sWy9HcD now",
        "CREDENTIAL",
        "T01ABCDEF/B02GHIJKL/q8Xv2NbT7mKp0LzR4sWy9HcD",
    ),
    (
        "discord-webhook",
        "https://discord.com/api/webhooks/112233445566778899/Xk2_pQ9-vLm3Rt8sWz0aBcDeFgHiJkLmNoPqRsTuVwXyZ012345",
        "CREDENTIAL",
        "Xk2_pQ9-vLm3Rt8sWz0aBcDeFgHiJkLmNoPqRsTuVwXyZ012345",
    ),
    (
        "teams-webhook",
        "https://contoso.webhook.office.com/webhookb2/7c9e6679-7425-40de-944b-e07fc1f90ae7@72f988bf/IncomingWebhook/1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c/4b3a2c1d",
        "CREDENTIAL",
        "IncomingWebhook/1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c",
    ),
    (
        "query-token",
        "GET https://api.example.com/v2/export?format=csv&token=f3K9xQ2mZ7pL0vB8nR4t",
        "CREDENTIAL",
        "f3K9xQ2mZ7pL0vB8nR4t",
    ),
    (
        "query-key",
        "https://maps.example.com/api/js?key=Qm9Lx2Vb7NcR3tZ8pW1s&callback=init",
        "CREDENTIAL",
        "Qm9Lx2Vb7NcR3tZ8pW1s",
    ),
    (
        "query-sig",
        "https://files.example.com/a.pdf?se=2026-12-31&sp=r&sig=Zx8%2Fq9LmN3vB7tR2pK5wYc0%3D",
        "CREDENTIAL",
        "Zx8%2Fq9LmN3vB7tR2pK5wYc0%3D",
    ),
    (
        "query-amz-signature",
        "https://b.s3.amazonaws.com/k?X-Amz-Expires=300&X-Amz-Signature=4f9c2e7a1b8d3f6e0a5c9b2d7e4f1a8c3b6d9e2f5a8c1b4d7e0f3a6c9b2e5d8f",
        "CREDENTIAL",
        "4f9c2e7a1b8d3f6e0a5c9b2d7e4f1a8c3b6d9e2f5a8c1b4d7e0f3a6c9b2e5d8f",
    ),
    (
        "postgres-userinfo",
        "DATABASE_URL=postgres://app_user:Xy7!pq9Lw@db.internal:5432/orders",
        "CREDENTIAL",
        "Xy7!pq9Lw",
    ),
    (
        "https-userinfo",
        "clone https://deploy:g7Hk2Lm9Qp@git.example.com/repo.git",
        "CREDENTIAL",
        "g7Hk2Lm9Qp",
    ),
    ("redis-userinfo", "redis://:S3cr3tRedis99@cache:6379/0", "CREDENTIAL", "S3cr3tRedis99"),
    (
        "mongodb-srv",
        "mongodb+srv://svc:Tz4%40kW9m@cluster0.example.net/db",
        "CREDENTIAL",
        "Tz4%40kW9m",
    ),
    (
        "aws-key-zero-width-and-tags",
        "key AKIA\u200bZSJA\U000e0041GC65\u2066FRX3JTTO here",
        "AWS_ACCESS_KEY",
        "AKIA\u200bZSJA\U000e0041GC65\u2066FRX3JTTO",
    ),
]


@pytest.mark.parametrize(
    ("text", "entity", "covered"), [c[1:] for c in FOUND], ids=[c[0] for c in FOUND]
)
def test_secret_is_found(detector: Detector, text: str, entity: str, covered: str) -> None:
    """The secret is reported with the expected type and a span covering the value."""
    found = find_in(detector, text)
    assert any(t == entity and covered in span for t, span in found), found


BENIGN = [
    ("pg-no-password", "Connect with postgresql://localhost/app or postgres://app@db:5432/app."),
    ("userinfo-placeholder", "DATABASE_URL=postgres://user:password@localhost:5432/mydb"),
    ("userinfo-template", "postgres://${DB_USER}:${DB_PASSWORD}@db:5432/app"),
    ("userinfo-angle", "mysql://root:<password>@127.0.0.1/test"),
    (
        "userinfo-same-as-user",
        "docker run -e DATABASE_URL=postgres://postgres:postgres@db/postgres",
    ),
    ("query-plain", "https://api.example.com/v1/items?limit=20&key=name&sort=asc"),
    ("query-placeholder", "https://api.example.com/v1/items?api_key=YOUR_API_KEY&token=<token>"),
    ("slack-docs", "Create an incoming webhook at https://api.slack.com/messaging/webhooks first."),
    ("password-prose", "How do I reset my password if I forgot it?"),
    ("password-reset-link", "Send the password reset link to the user again."),
    ("password-policy", "The password must be at least 12 characters long."),
    ("percent-format", 'cursor.execute("... password=%s", (pw,)) and "%(password)s"'),
    ("windows-env", "set PASSWORD=%DB_PASSWORD% before running the job"),
    ("shell-substitution", 'password="$(cat /run/secrets/db)"'),
    ("login-prose", "The login page returns 403 after the upgrade."),
    ("password-for-user", "Reset the password for jsmith and tell me when it is done."),
    ("passwords-are", "Our passwords are stored hashed with argon2."),
    ("password-is-required", "The password is required; the password was wrong twice."),
]


@pytest.mark.parametrize("text", [c[1] for c in BENIGN], ids=[c[0] for c in BENIGN])
def test_benign_is_not_a_secret(detector: Detector, text: str) -> None:
    """Placeholders, documentation URLs and prose about passwords give no secret finding."""
    found = [(t, s) for t, s in find_in(detector, text) if entity_group(t) is EntityGroup.SECRET]
    assert found == []
