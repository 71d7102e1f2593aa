"""Bastion's recognizers, table-driven: what each must find (and its exact span), and lookalikes
it must leave alone. Values are synthetic (valid checksums, reserved ranges)."""

from __future__ import annotations

import pytest

from gateway.detect import Detector, EntityGroup, entity_group
from tests.detect.conftest import find_in

FOUND = [
    # (text, entity type, the exact text that must be covered)
    ("For the record, SSN: 818189100.", "US_SSN", "818189100"),
    ("social security number 411-82-3285.", "US_SSN", "411-82-3285"),
    ('"ssn": "660 92 0560"', "US_SSN", "660 92 0560"),
    ("SSN ５６１ ８１ ４９５７.", "US_SSN", "５６１ ８１ ４９５７"),
    ("ssn 6 0 5 6 5 3 2 5 8", "US_SSN", "6 0 5 6 5 3 2 5 8"),
    ("Visa card 4110-7364-9084-8577.", "CREDIT_CARD", "4110-7364-9084-8577"),
    ("Charge 4861 1429 0270 1853 today", "CREDIT_CARD", "4861 1429 0270 1853"),
    ("amex 3428-282399-35233", "CREDIT_CARD", "3428-282399-35233"),
    (
        "card 5\u200b1\u200b6\u200b7\u200b-\u200b7\u200b2\u200b1\u200b8\u200b-\u200b2\u200b0\u200b3\u200b3\u200b-\u200b0\u200b2\u200b3\u200b0",
        "CREDIT_CARD",
        "5\u200b1\u200b6\u200b7\u200b-\u200b7\u200b2\u200b1\u200b8\u200b-\u200b2\u200b0\u200b3\u200b3\u200b-\u200b0\u200b2\u200b3\u200b0",
    ),
    ("IBAN GB91 NWBK 2361 1269 4596 76 to other", "IBAN_CODE", "GB91 NWBK 2361 1269 4596 76"),
    (
        "iban: ＤＥ３０ ７４１７ ０００３ ２９８５ ５０１０ １８.",
        "IBAN_CODE",
        "ＤＥ３０ ７４１７ ０００３ ２９８５ ５０１０ １８",
    ),
    (
        "F R 7 6 2 4 0 6 3 8 1 7 3 5 4 6 1 9 4 9 8 9 8 2 1 7 3",
        "IBAN_CODE",
        "F R 7 6 2 4 0 6 3 8 1 7 3 5 4 6 1 9 4 9 8 9 8 2 1 7 3",
    ),
    ("phone: +1-206-489-8732.", "PHONE_NUMBER", "+1-206-489-8732"),
    ("reach him on (305) 797-6837.", "PHONE_NUMBER", "(305) 797-6837"),
    ("mobile 313.432.0490.", "PHONE_NUMBER", "313.432.0490"),
    ("cellulare +39 065 676 9029.", "PHONE_NUMBER", "+39 065 676 9029"),
    ("téléphone 03 24 42 35 38.", "PHONE_NUMBER", "03 24 42 35 38"),
    ("Telefon 0160 50927103.", "PHONE_NUMBER", "0160 50927103"),
    ("mobile (６１７) ５５９-７７４８.", "PHONE_NUMBER", "(６１７) ５５９-７７４８"),
    ('"phone": "8 5 8 5 9 6 2 0 8 4"', "PHONE_NUMBER", "8 5 8 5 9 6 2 0 8 4"),
    ("mail jessica76@example.com now", "EMAIL_ADDRESS", "jessica76@example.com"),
    ("unsub?addr=martinezbrandon%40example.com.", "EMAIL_ADDRESS", "martinezbrandon%40example.com"),
    (
        "contact: aliciagutierrez[at]example[dot]org.",
        "EMAIL_ADDRESS",
        "aliciagutierrez[at]example[dot]org",
    ),
    ("e-mail ztrevino at example dot net.", "EMAIL_ADDRESS", "ztrevino at example dot net"),
    ("<mailto:qclay@example.net>", "EMAIL_ADDRESS", "qclay@example.net"),
    ("login from IP 139.87.70.158.", "IP_ADDRESS", "139.87.70.158"),
    ("passport no. J59188336.", "US_PASSPORT", "J59188336"),
    (
        "Passport: 3\u200b6\u200b2\u200b2\u200b3\u200b6\u200b1\u200b4\u200b1.",
        "US_PASSPORT",
        "3\u200b6\u200b2\u200b2\u200b3\u200b6\u200b1\u200b4\u200b1",
    ),
    ("Reisepassnummer 317570189.", "US_PASSPORT", "317570189"),
    ("US passport number Ｖ６９９６８１７６.", "US_PASSPORT", "Ｖ６９９６８１７６"),
    ("For the record, MRN-47576698.", "MEDICAL_RECORD_NUMBER", "47576698"),
    ("Note: patient ID 881881979.", "MEDICAL_RECORD_NUMBER", "881881979"),
    ("MRN 5 0 0 0 5 5 4 5.", "MEDICAL_RECORD_NUMBER", "5 0 0 0 5 5 4 5"),
    ("Note: DOB 10/23/1953.", "DATE_OF_BIRTH", "10/23/1953"),
    ("She was born on 12/13/1954.", "DATE_OF_BIRTH", "12/13/1954"),
    ('"date_of_birth": "December 18, 1965"', "DATE_OF_BIRTH", "December 18, 1965"),
    ("nato il 22/10/1974.", "DATE_OF_BIRTH", "22/10/1974"),
    ("our AWS key AKIAMLQUMAMI7622M7CX.", "AWS_ACCESS_KEY", "AKIAMLQUMAMI7622M7CX"),
    (
        "PAT ghp_Uu0moHnioT7vb0Y5tqzk6L1p0NrwKKEZ4SD5.",
        "GITHUB_TOKEN",
        "ghp_Uu0moHnioT7vb0Y5tqzk6L1p0NrwKKEZ4SD5",
    ),
    (
        "OPENAI_API_KEY=sk-proj-A_VlahgFs3ip7I0YYUnw-ZldH_cQXDdNYljl7s.",
        "OPENAI_API_KEY",
        "sk-proj-A_VlahgFs3ip7I0YYUnw-ZldH_cQXDdNYljl7s",
    ),
    (
        "key:\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIJEYiYb8TLuF+4cVD8Q\n-----END EC PRIVATE KEY-----.",
        "PRIVATE_KEY",
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIJEYiYb8TLuF+4cVD8Q\n-----END EC PRIVATE KEY-----",
    ),
    (
        '"k": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0\\n-----END PRIVATE KEY-----"',
        "PRIVATE_KEY",
        "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0\\n-----END PRIVATE KEY-----",
    ),
    (
        "jwt=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.J2EIIkplU5yi6CeT5-wUvISR.",
        "JWT",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.J2EIIkplU5yi6CeT5-wUvISR",
    ),
    ("For the record, password: 9MH72&isGMH!oR.", "PASSWORD", "9MH72&isGMH!oR"),
    ('"password": "kb8ucJ@iTW8K3R"', "PASSWORD", "kb8ucJ@iTW8K3R"),
    ("PASSWORD=fRtG?RUpF3LK5\nSSN=1", "PASSWORD", "fRtG?RUpF3LK5"),
    ("  password: 1*s*RtU1eEAO7+8sG=\n", "PASSWORD", "1*s*RtU1eEAO7+8sG="),
    ("mot de passe : 4#j#qI1mwtq3%fwyps.", "PASSWORD", "4#j#qI1mwtq3%fwyps"),
    (
        "Authorization: Bearer abcdefghijklmnop1234567890",
        "CREDENTIAL",
        "abcdefghijklmnop1234567890",
    ),
    ("name,mrn\nconor burke,4902578\n", "MEDICAL_RECORD_NUMBER", "4902578"),
    ("name,mrn\nconor burke,4902578\n", "PERSON", "conor burke"),
    ('name,ssn\n"Collet, Nicolas",401-71-9606\n', "PERSON", "Collet, Nicolas"),
    ("Account holder: the patient qiang chang.", "PERSON", "qiang chang"),
    ("Cliente: piermaria alonzi. indirizzo: x", "PERSON", "piermaria alonzi"),
    ("This concerns my colleague Teresa Wilson.", "PERSON", "Teresa Wilson"),
    ("Account holder: CAITLYN BONILLA. Is", "PERSON", "CAITLYN BONILLA"),
    ("My first name is kayleigh.", "PERSON", "kayleigh"),
    (
        "lives at 917 Joseph Overpass, Amytown, MH 87927.",
        "STREET_ADDRESS",
        "917 Joseph Overpass, Amytown, MH 87927",
    ),
    (
        "ADDRESS=Flat 68d Watts Isle, SP3H 6ST Gileshaven\n",
        "STREET_ADDRESS",
        "Flat 68d Watts Isle, SP3H 6ST Gileshaven",
    ),
    (
        "Anschrift: Gutknechtstraße 8, 42924 Deggendorf.",
        "STREET_ADDRESS",
        "Gutknechtstraße 8, 42924 Deggendorf",
    ),
    (
        "home address: 58, rue Dubois, 07102 Maillard.",
        "STREET_ADDRESS",
        "58, rue Dubois, 07102 Maillard",
    ),
    (
        "indirizzo: Borgo Porcellato, 75, 87064 Borgofranco Sul Po.",
        "STREET_ADDRESS",
        "Borgo Porcellato, 75, 87064 Borgofranco Sul Po",
    ),
]


@pytest.mark.parametrize(
    ("text", "entity", "covered"), FOUND, ids=[f"{e}-{i}" for i, (_, e, _c) in enumerate(FOUND)]
)
def test_recognizer_finds(detector: Detector, text: str, entity: str, covered: str) -> None:
    """The entity is reported with a span covering exactly (or more than) the value."""
    found = find_in(detector, text)
    assert any(t == entity and covered in span for t, span in found), found


BENIGN = [
    "Format these references: ISBN 978-9-782-60427-9, ISBN 978-5-587-94566-1, DOI 10.4476/55e59a.",
    "The product with EAN 4089082952786 and SKU-4652-BLK is out of stock until September 23, 2025.",
    "Convert the timestamps 1700000000 and 1704776513 to UTC dates.",
    "We upgraded from Python 3.9.18 to 3.12.4. Our CI image is ubuntu-22.04.",
    "Our API listens on 127.0.0.1:8080 and the docs example uses 192.0.2.26.",
    "How many days are there between 2024-03-01 and 2024-04-15?",
    "Ticket JIRA-4481 says room 4B-184 needs 10 chairs by Q2 2024.",
    "A loan of 25,000 at 4.5% yearly interest: what is the interest after 3 years?",
    "AWS_ACCESS_KEY_ID=your-access-key-id\nAWS_SECRET_ACCESS_KEY=your-secret\nGITHUB_TOKEN=changeme",
    'curl -H "Authorization: Bearer $TOKEN" https://api.example.com/v1/items?limit=20',
    "auth:\n  password: ${DB_PASSWORD}\n  token_file: /run/secrets/api_token",
    'API_KEY = os.environ["OPENAI_API_KEY"]\nDB_URL = os.getenv("DATABASE_URL")',
    "How do I read a database password from an environment variable in Python?",
    "Request id 3fa85f64-5717-4562-b3fc-2c963f66afa6 failed with HTTP 503.",
    "How can I request a new credit card pin ?",
]


@pytest.mark.parametrize("text", BENIGN, ids=[f"benign-{i}" for i in range(len(BENIGN))])
def test_lookalikes_are_not_structured_or_secret(detector: Detector, text: str) -> None:
    """Product codes, ISBNs, UUIDs, versions, loopback/documentation IPs, plain dates and
    placeholders produce no structured-identifier or secret finding."""
    found = [
        (t, s)
        for t, s in find_in(detector, text)
        if entity_group(t) in (EntityGroup.STRUCTURED_ID, EntityGroup.SECRET)
    ]
    assert found == []


@pytest.mark.parametrize(
    "text",
    ["Write a short biography of Lionel Messi.", "Compare Marie Curie and Albert Einstein."],
    ids=["messi", "curie-einstein"],
)
def test_public_figures_are_not_persons(detector: Detector, text: str) -> None:
    """Well-known public figures named in a prompt are not reported as PERSON."""
    assert [t for t, _ in find_in(detector, text) if t == "PERSON"] == []


def test_ner_finds_names_without_cues(detector: Detector) -> None:
    """spaCy NER (through Presidio) finds a name with no cue word in front of it."""
    text = "Nathan spent a year at Reyes LLC as the assistant to Claire Barton, and then left."
    assert ("PERSON", "Claire Barton") in find_in(detector, text)
