"""Red team of issue 13's PII gate, from outside, through the real gateway (mTLS on loopback),
``policies/default.yaml`` and a recording managed upstream.

Each attack sends one request and then reads what the managed upstream recorded, decoded the
way a reader (or the model) would: the raw bytes and every decoded string (JSON inside
strings, HTML entities, percent-encoding, ``\\uXXXX`` escapes, base64 words), NFKC-folded,
every Unicode decimal digit as its ASCII digit, letters upper-cased, only letters and digits
kept. An attack *leaks* when every piece of its forbidden value appears in order in that
skeleton (or, for a number, in the digits of it). A secret must also be denied (403). No attack
may get a 500 or an error that echoes the value.

Two tables:

- ``HOLDS``: attacks the gate stops today (passing tests that pin the behaviour);
- ``BREAKS``: attacks that get through today, each ``xfail(strict=True)`` with what leaks, so
  the suite stays green and a fix flips the test to an XPASS failure (then move it to HOLDS).

Who fixes which BREAKS (lead's assignment, 14:57 UTC; remove a test's xfail when it is fixed):
- the gate engineer (egress scan, typed model; gateway/sanitize/egress.py, gateway/api/*):
  1. JSON numbers (seed, token-id prompts, schema default/enum/const/examples numbers);
  5. encodings decoded by the egress scan (HTML entities, percent-encoding, base64 words,
     literal \\uXXXX escapes, escapes in not-quite-JSON tool arguments, duplicate keys in tool
     arguments: scan every occurrence, first and last);
  6. values split across fields/turns (stop arrays, AWS key over two messages).
- the detect-2 engineer (recognizers; gateway/detect/_structured.py, _secrets.py,
  _normalize.py):
  2. letters/digits glued to a value (ssn-glued-*, card-glued, card-in-longer-digits,
     aws-glued, ssn-in-user / metadata key / function name / schema name);
  3. separators (spaced dashes, U+2044, newlines, double spaces, IBAN dashes/dots,
     U+3002 as a dot, quoted email local part);
  4. AWS key id variants (lowercase, spaced groups, Cyrillic homoglyph prefix).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import contextlib
import html
import json
import unicodedata
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fixtures.pki import CertPair
from tests.fixtures.upstream import RecordingUpstream
from tests.gateway.conftest import RunningGateway
from tests.gateway.test_gateway_surface import default_gateway  # noqa: F401 - a fixture

SSN = "078-05-1120"
SSN_DIGITS = "078051120"
SSN2_DIGITS = "219099999"  # 219-09-9999, as a JSON number (no leading zero to lose)
CARD_DIGITS = "4111111111111111"
AWS = "AKIAZ3MXQ7V4WLBN2TQE"
IBAN = "GB82WEST12345698765432"
EMAIL = "JANEROEEXAMPLECOM"  # jane.roe@example.com, letters and digits
ESCAPED_SSN = "\\u0030\\u0037\\u0038-\\u0030\\u0035-\\u0031\\u0031\\u0032\\u0030"

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
Body = dict[str, Any]


# -- reading what the managed upstream got ---------------------------------------------------


def _fold(text: str) -> str:
    out: list[str] = []
    for c in unicodedata.normalize("NFKC", text):
        digit = unicodedata.digit(c, None)
        if digit is not None:
            out.append(str(digit))
        elif c.isalnum():
            out.append(c.upper())
    return "".join(out)


def _decodings(text: str) -> list[str]:
    forms = [text, html.unescape(text), urllib.parse.unquote(text)]
    with contextlib.suppress(UnicodeDecodeError, ValueError):
        forms.append(codecs.decode(text.encode("latin-1", "ignore"), "unicode_escape"))
    for word in text.replace('"', " ").split():
        with contextlib.suppress(ValueError, binascii.Error):
            forms.append(base64.b64decode(word + "==").decode("utf-8", "ignore"))
    return forms


def _skeletons(upstream: RecordingUpstream) -> list[str]:
    """Letters-and-digits skeletons of everything the managed upstream received."""
    raw = upstream.all_bytes().decode("utf-8", "replace")
    folded = [_fold(form) for form in _decodings(raw)]
    stack: list[Any] = [r.body for r in upstream.received]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            folded.extend(_fold(form) for form in _decodings(node))
            with contextlib.suppress(ValueError):
                stack.append(json.loads(node))
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, int | float) and not isinstance(node, bool):
            folded.append(str(node))
    digits = ["".join(c for c in s if c.isdigit()) for s in folded]
    return folded + digits


def _leaks(pieces: tuple[str, ...], skeletons: list[str]) -> bool:
    """Every piece appears, in order, within one skeleton."""
    for skeleton in skeletons:
        at = 0
        for piece in pieces:
            found = skeleton.find(piece, at)
            if found < 0:
                break
            at = found + len(piece)
        else:
            return True
    return False


# -- request builders ------------------------------------------------------------------------


def msg(text: str) -> Body:
    return {"model": "chat-default", "messages": [{"role": "user", "content": text}]}


def chat(**fields: Any) -> Body:
    return {
        "model": "chat-default",
        "messages": [{"role": "user", "content": "Say hello."}],
        **fields,
    }


def tool_params(schema: Body) -> Body:
    return chat(tools=[{"type": "function", "function": {"name": "lookup", "parameters": schema}}])


def prop(**schema: Any) -> Body:
    return {"type": "object", "properties": {"q": schema}}


def call_args(arguments: str) -> Body:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": arguments},
    }
    return {
        "model": "chat-default",
        "messages": [
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
            {"role": "user", "content": "Say hello."},
        ],
    }


def turns(*texts: str) -> Body:
    return {"model": "chat-default", "messages": [{"role": "user", "content": t} for t in texts]}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def raw(tail: str) -> bytes:
    """A chat body written by hand (duplicate keys, escapes a client library would refuse)."""
    return ('{"model":"chat-default","messages":[{"role":"user","content":"hi"}]' + tail).encode()


@dataclass(frozen=True)
class Attack:
    id: str
    body: Body | bytes
    forbid: tuple[str, ...]  # pieces of the value, in order, that must not arrive at managed
    endpoint: str = CHAT
    deny: bool = False  # a secret: the answer must be 403
    status: int | None = None  # an exact status the gate must give (e.g. 400)
    reason: str = ""  # BREAKS: what leaks


def _run(
    attack: Attack, gateway: RunningGateway, cert: CertPair, managed: RecordingUpstream
) -> list[str]:
    with gateway.client(cert) as client:
        if isinstance(attack.body, bytes):
            response = client.post(
                attack.endpoint, content=attack.body, headers={"content-type": "application/json"}
            )
        else:
            response = client.post(attack.endpoint, json=attack.body)
    failures: list[str] = []
    status = response.status_code
    if status >= 500 and status != 502:
        failures.append(f"status {status}")
    if attack.status is not None and status != attack.status:
        failures.append(f"status {status}, not {attack.status}")
    if attack.deny and status != 403:
        failures.append(
            f"a secret answered {status} ({response.headers.get('x-bastion-route')}), not 403"
        )
    if status >= 400 and (SSN in response.text or AWS in response.text):
        failures.append("the error echoes the value")
    if _leaks(attack.forbid, _skeletons(managed)):
        failures.append(f"{'+'.join(attack.forbid)} arrived at the managed upstream")
    return failures


# -- attacks the gate stops (these pass) -----------------------------------------------------

HOLDS = [
    # Unicode digit forms the normalizer folds (NFKC, category Nd).
    Attack(
        "ssn-circled-digits",
        msg("ssn \u24ea\u2466\u2467-\u24ea\u2464-\u2460\u2460\u2461\u24ea"),
        (SSN_DIGITS,),
    ),
    Attack(
        "ssn-superscripts",
        msg("ssn \u2070\u2077\u2078-\u2070\u2075-\u00b9\u00b9\u00b2\u2070"),
        (SSN_DIGITS,),
    ),
    Attack(
        "ssn-math-digits",
        msg(
            "ssn \U0001d7ce\U0001d7d5\U0001d7d6-\U0001d7ce\U0001d7d3-\U0001d7cf\U0001d7cf\U0001d7d0\U0001d7ce"
        ),
        (SSN_DIGITS,),
    ),
    Attack(
        "ssn-arabic-indic",
        msg("ssn \u0660\u0667\u0668-\u0660\u0665-\u0661\u0661\u0662\u0660"),
        (SSN_DIGITS,),
    ),
    Attack("ssn-nul-inside", msg("ssn 078-05\u0000-1120"), (SSN_DIGITS,)),
    Attack("ssn-ideographic-space", msg("ssn 078\u300005\u30001120"), (SSN_DIGITS,)),
    Attack("ssn-dots", msg("my ssn is 078.05.1120"), (SSN_DIGITS,)),
    Attack("ssn-slashes", msg("my ssn is 078/05/1120"), (SSN_DIGITS,)),
    Attack("ssn-digit-spaced", msg("ssn 0 7 8 0 5 1 1 2 0"), (SSN_DIGITS,)),
    Attack("ssn-bare-digits", msg("the number 219099999 is on file"), (SSN2_DIGITS,)),
    Attack("ssn-two-turns", turns("first part 078-05", "second part 1120"), ("07805", "1120")),
    Attack("card-dots", msg("card 4111.1111.1111.1111"), (CARD_DIGITS,)),
    Attack("card-slashes", msg("card 4111/1111/1111/1111"), (CARD_DIGITS,)),
    Attack("iban-spaced", msg("iban GB82 WEST 1234 5698 7654 32"), (IBAN,)),
    Attack("iban-lowercase", msg("iban gb82west12345698765432"), (IBAN,)),
    Attack("email-uppercase", msg("mail JANE.ROE@EXAMPLE.COM"), (EMAIL,)),
    Attack("email-small-at", msg("mail jane.roe\ufe6bexample.com"), (EMAIL,)),
    Attack("email-defanged", msg("mail jane.roe[at]example[dot]com"), (EMAIL,)),
    Attack("email-idn-domain", msg("mail jane.roe@ex\u00e4mple.com"), ("JANEROEEX",)),
    Attack(
        "email-message-name",
        {
            "model": "chat-default",
            "messages": [{"role": "user", "name": "jane.roe@example.com", "content": "hi"}],
        },
        (EMAIL,),
    ),
    Attack("email-metadata-key", chat(metadata={"jane.roe@example.com": "x"}), (EMAIL,)),
    # Tool schema words that are strings (property names, required, $defs, pattern).
    Attack(
        "schema-required",
        tool_params({"type": "object", "properties": {}, "required": [SSN]}),
        (SSN_DIGITS,),
    ),
    Attack(
        "schema-defs-key",
        tool_params({"type": "object", "$defs": {SSN: {"type": "string"}}}),
        (SSN_DIGITS,),
    ),
    Attack(
        "schema-pattern", tool_params(prop(type="string", pattern="^078-05-1120$")), (SSN_DIGITS,)
    ),
    Attack("tool-args-number", call_args(json.dumps({"q": 219099999})), (SSN2_DIGITS,)),
    Attack(
        "json-in-string-6-deep",
        chat(
            metadata={
                "n": json.dumps(
                    json.dumps(json.dumps(json.dumps(json.dumps(json.dumps({"q": SSN})))))
                )
            }
        ),
        (SSN_DIGITS,),
    ),
    Attack("stream-ssn", {**msg("my ssn is 078.05.1120"), "stream": True}, (SSN_DIGITS,)),
    # Duplicate JSON keys: the last wins, and what is scanned is what is sent.
    Attack("dup-key-last-wins", raw(f',"user":"x","user":"{SSN}"}}'), (SSN_DIGITS,)),
    Attack("dup-key-first-dropped", raw(f',"user":"{SSN}","user":"x"}}'), (SSN_DIGITS,)),
    Attack(
        "utf16-body",
        '{"model":"chat-default","messages":[{"role":"user","content":"078-05-1120"}]}'.encode(
            "utf-16"
        ),
        (SSN_DIGITS,),
    ),
    # Secrets of other vendors: denied.
    Attack("aws-temporary-asia", msg("key ASIAZ3MXQ7V4WLBN2TQE"), ("Z3MXQ7V4WLBN2TQE",), deny=True),
    Attack(
        "aws-secret-key",
        msg("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYzXqLmNoPq"),
        ("WJALRXUTNFEMI",),
        deny=True,
    ),
    Attack(
        "stripe-live-key",
        msg("use sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
        ("4EC39HQLYJWDARJTT1ZDP7DC",),
        deny=True,
    ),
    Attack(
        "slack-bot-token",
        msg("token xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
        ("ABCDEFGHIJKLMNOPQRSTUVWX",),
        deny=True,
    ),
    Attack(
        "google-api-key",
        msg("key AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"),
        ("AIZASYD9TSRKE72",),
        deny=True,
    ),
    Attack(
        "gitlab-pat", msg("glpat-xxxxxxxxxxxxxxxxxxxx"), ("GLPATXXXXXXXXXXXXXXXXXXXX",), deny=True
    ),
    Attack(
        "bearer-header",
        msg("Authorization: Bearer 7f3a9c2e8b1d4f6a0c5e9b2d7a1f3c8e"),
        ("7F3A9C2E8B1D4F6A",),
        deny=True,
    ),
    # Bad input: a 400 naming the problem, not a 500, nothing forwarded.
    Attack("lone-surrogate", raw(',"user":"\\ud800 078-05-1120"}'), (SSN_DIGITS,), status=400),
    Attack("float-too-large", raw(',"temperature":1e400}'), (SSN_DIGITS,), status=400),
    Attack("seed-as-float", raw(',"seed":4111111111111111.0}'), (CARD_DIGITS,), status=400),
    Attack(
        "invalid-utf8",
        b'{"model":"chat-default","messages":[{"role":"user","content":"\xff 078-05-1120"}]}',
        (SSN_DIGITS,),
        status=400,
    ),
    # Errors name the field, never the value, even when the value is the field's NAME.
    Attack("unknown-key-is-ssn", chat(**{SSN: 1}), (SSN_DIGITS,), status=400),
    Attack(
        "unknown-message-key-is-aws",
        {"model": "chat-default", "messages": [{"role": "user", "content": "hi", AWS: 1}]},
        (AWS,),
        status=400,
    ),
    Attack(
        "role-is-aws",
        {"model": "chat-default", "messages": [{"role": AWS, "content": "hi"}]},
        (AWS,),
        status=400,
    ),
    Attack("metadata-key-too-long-aws", chat(metadata={AWS * 4: "x"}), (AWS,), status=400),
    Attack(
        "model-is-aws",
        {"model": AWS, "messages": [{"role": "user", "content": "hi"}]},
        (AWS,),
        status=404,
    ),
    Attack("max-tokens-as-ssn", chat(max_tokens=219099999), (SSN2_DIGITS,), status=400),
    # Long JSON numbers (STRUCTURE integers, numbers in free-form schemas): the egress scan
    # fails closed on every number of 8+ digits (gate engineer, issue 13).
    Attack(
        "seed-card-number",
        chat(seed=4111111111111111),
        (CARD_DIGITS,),
        reason="a card number as the integer seed",
    ),
    Attack(
        "prompt-token-ids",
        {"model": "chat-default", "prompt": [219099999]},
        (SSN2_DIGITS,),
        endpoint=COMPLETIONS,
        reason="an SSN as a /v1/completions token id (no bound on a token id)",
    ),
    Attack(
        "schema-default-number",
        tool_params(prop(type="integer", default=219099999)),
        (SSN2_DIGITS,),
        reason="SSN as a JSON-number default",
    ),
    Attack(
        "schema-enum-number",
        tool_params(prop(type="integer", enum=[4111111111111111])),
        (CARD_DIGITS,),
        reason="card as a JSON-number enum",
    ),
    Attack(
        "schema-const-number",
        tool_params(prop(const=219099999)),
        (SSN2_DIGITS,),
        reason="SSN as a JSON-number const",
    ),
    Attack(
        "schema-examples-number",
        tool_params(prop(examples=[219099999])),
        (SSN2_DIGITS,),
        reason="SSN as a JSON-number example",
    ),
    # Encodings: the egress scan also reads HTML-entity, percent and \\uXXXX decodings of
    # every string (gate engineer, issue 13).
    Attack(
        "ssn-html-entities",
        msg("ssn &#x30;&#x37;&#x38;-&#x30;&#x35;-&#x31;&#x31;&#x32;&#x30;"),
        (SSN_DIGITS,),
        reason="SSN as HTML entities",
    ),
    Attack(
        "ssn-percent-encoded",
        msg("ssn %30%37%38-%30%35-%31%31%32%30"),
        (SSN_DIGITS,),
        reason="SSN percent-encoded",
    ),
    Attack(
        "ssn-escapes-in-text",
        msg("ssn " + ESCAPED_SSN),
        (SSN_DIGITS,),
        reason="SSN as \\uXXXX escapes in plain text",
    ),
    Attack(
        "tool-args-escapes-invalid-json",
        call_args('{"q":"' + ESCAPED_SSN + '"'),
        (SSN_DIGITS,),
        reason="SSN as \\uXXXX escapes in tool arguments that are not quite JSON (never decoded)",
    ),
    Attack(
        "tool-args-duplicate-key",
        call_args('{"q":"' + ESCAPED_SSN + '","q":"x"}'),
        (SSN_DIGITS,),
        reason="SSN as escapes under the FIRST of two duplicate keys in tool arguments: "
        "json.loads keeps the last, the raw string hides it behind escapes",
    ),
    # Glue, separators and AWS key id variants (red team BREAKS fixed by the recognizers:
    # digit runs in gateway/detect/_structured.py, AWS variants in _secrets.py).
    Attack(
        "ssn-spaced-dashes",
        msg("my ssn is 078 - 05 - 1120"),
        (SSN_DIGITS,),
        reason="SSN written 078 - 05 - 1120",
    ),
    Attack(
        "ssn-fraction-slash",
        msg("ssn 078\u204405\u20441120"),
        (SSN_DIGITS,),
        reason="SSN with U+2044 FRACTION SLASH",
    ),
    Attack(
        "ssn-glued-letter",
        msg("ref s078-05-1120 noted"),
        (SSN_DIGITS,),
        reason="SSN glued to a letter (s078-05-1120)",
    ),
    Attack(
        "ssn-glued-both",
        msg("refA078051120Z noted"),
        (SSN_DIGITS,),
        reason="SSN digits inside a word",
    ),
    Attack(
        "ssn-in-user",
        chat(user="u078051120"),
        (SSN_DIGITS,),
        reason="SSN glued to a letter in user",
    ),
    Attack(
        "ssn-in-metadata-key",
        chat(metadata={"k078-05-1120": "x"}),
        (SSN_DIGITS,),
        reason="SSN glued to a letter in a metadata key",
    ),
    Attack(
        "ssn-in-function-name",
        chat(tools=[{"type": "function", "function": {"name": "f_078_05_1120"}}]),
        (SSN_DIGITS,),
        reason="SSN with _ separators in a tool name",
    ),
    Attack(
        "ssn-in-schema-name",
        chat(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "s078051120", "schema": {}},
            }
        ),
        (SSN_DIGITS,),
        reason="SSN glued to a letter in response_format.json_schema.name",
    ),
    Attack(
        "card-newlines",
        msg("card\n4111\n1111\n1111\n1111"),
        (CARD_DIGITS,),
        reason="card groups on separate lines",
    ),
    Attack(
        "card-double-spaces",
        msg("card 4111  1111  1111  1111"),
        (CARD_DIGITS,),
        reason="card groups with two spaces",
    ),
    Attack(
        "card-spaced-dashes",
        msg("card 4111 - 1111 - 1111 - 1111"),
        (CARD_DIGITS,),
        reason="card groups ' - ' separated",
    ),
    Attack(
        "card-glued",
        msg("ref x4111111111111111 noted"),
        (CARD_DIGITS,),
        reason="card glued to a letter",
    ),
    Attack(
        "card-in-longer-digits",
        msg("order 9941111111111111111 noted"),
        (CARD_DIGITS,),
        reason="card inside a longer digit run",
    ),
    Attack(
        "iban-dashes",
        msg("iban GB82-WEST-1234-5698-7654-32"),
        (IBAN,),
        reason="IBAN groups with dashes",
    ),
    Attack(
        "iban-dots",
        msg("iban GB82.WEST.1234.5698.7654.32"),
        (IBAN,),
        reason="IBAN groups with dots",
    ),
    Attack(
        "email-ideographic-dot",
        msg("mail jane.roe@example\u3002com"),
        (EMAIL,),
        reason="email with U+3002 (IDNA reads it as a dot)",
    ),
    Attack(
        "email-quoted-local",
        msg('mail "jane.roe"@example.com'),
        (EMAIL,),
        reason="email with a quoted local part",
    ),
    Attack(
        "aws-lowercase",
        msg("key akiaz3mxq7v4wlbn2tqe"),
        (AWS,),
        deny=True,
        reason="AWS key id lower-cased",
    ),
    Attack(
        "aws-spaced-groups",
        msg("key AKIA Z3MX Q7V4 WLBN 2TQE"),
        (AWS,),
        deny=True,
        reason="AWS key id in groups of 4",
    ),
    Attack(
        "aws-glued",
        msg("keyAKIAZ3MXQ7V4WLBN2TQEend"),
        (AWS,),
        deny=True,
        reason="AWS key id glued to letters",
    ),
    Attack(
        "aws-cyrillic-prefix",
        msg("key \u0410\u041a\u0406\u0410Z3MXQ7V4WLBN2TQE"),
        ("Z3MXQ7V4WLBN2TQE",),
        deny=True,
        reason="AWS key id with Cyrillic АКІА: the 16 secret characters go verbatim",
    ),
]


# -- attacks that get through today (xfail strict: a fix makes them XPASS) -------------------

BREAKS = [
    # Encodings the normalizer does not decode (the model reads them).
    Attack("ssn-base64", msg("decode this: " + b64(SSN)), (SSN_DIGITS,), reason="SSN in base64"),
    # Secrets: not denied.
    # Split across fields or turns: each piece is clean alone.
    Attack(
        "ssn-split-stop",
        chat(stop=["078-05-", "1120"]),
        (SSN_DIGITS,),
        reason="SSN split over two stop sequences",
    ),
    Attack(
        "aws-split-stop",
        chat(stop=["AKIAZ3MXQ7", "V4WLBN2TQE"]),
        (AWS,),
        deny=True,
        reason="AWS key split over two stop sequences",
    ),
    Attack(
        "aws-split-turns",
        turns("AKIAZ3MXQ7", "V4WLBN2TQE"),
        ("AKIAZ3MXQ7", "V4WLBN2TQE"),
        deny=True,
        reason="AWS key split over two user turns",
    ),
]


def _cases(attacks: list[Attack], broken: bool) -> list[Any]:
    def marks(attack: Attack) -> list[Any]:
        if not broken:
            return []
        return [pytest.mark.xfail(strict=True, reason=f"red team: {attack.reason}")]

    return [pytest.param(a, id=a.id, marks=marks(a)) for a in attacks]


@pytest.mark.parametrize("attack", _cases(HOLDS, broken=False))
def test_holds(
    default_gateway: Callable[..., RunningGateway],  # noqa: F811 - the imported fixture
    billing: CertPair,
    recording_upstream: RecordingUpstream,
    attack: Attack,
) -> None:
    """The gate stops this attack: nothing of the value reaches the managed upstream, a secret
    is denied, bad input is a 4xx that does not echo the value."""
    assert _run(attack, default_gateway(), billing, recording_upstream) == []


@pytest.mark.parametrize("attack", _cases(BREAKS, broken=True))
def test_breaks(
    default_gateway: Callable[..., RunningGateway],  # noqa: F811 - the imported fixture
    billing: CertPair,
    recording_upstream: RecordingUpstream,
    attack: Attack,
) -> None:
    """Today this attack gets the value (or a secret without a 403) to the managed upstream."""
    assert _run(attack, default_gateway(), billing, recording_upstream) == []


def test_leak_check_can_fail() -> None:
    """The skeleton check itself finds each encoding used above (so a BREAK's xfail is real)."""
    for text, pieces in [
        ("&#x30;&#x37;&#x38;-&#x30;&#x35;-&#x31;&#x31;&#x32;&#x30;", (SSN_DIGITS,)),
        (b64(SSN), (SSN_DIGITS,)),
        (ESCAPED_SSN, (SSN_DIGITS,)),
        ("\u0660\u0667\u0668-\u0660\u0665-\u0661\u0661\u0662\u0660", (SSN_DIGITS,)),
        ("akiaz3mxq7v4wlbn2tqe", (AWS,)),
    ]:
        skeletons = [_fold(form) for form in _decodings(text)]
        skeletons += ["".join(c for c in s if c.isdigit()) for s in skeletons]
        assert _leaks(pieces, skeletons), text
    assert not _leaks((SSN_DIGITS,), [_fold("Say hello.")])
