"""``bastion policy replay`` over a real SQLite trail: every recorded decision re-decided under a
candidate policy, the report matching what the candidate's ``decide`` gives on the same facts
(computed here independently), records without inputs counted as not replayable, the trail
untouched, and the live shadow policy reporting the same changes in the same shape."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from gateway.audit import (
    AuditConfig,
    AuditUnavailable,
    DecisionInputs,
    DecisionRecord,
    header_digest,
    open_audit_trail,
    open_store,
)
from gateway.audit._chain import Entry
from gateway.audit._config import audit_digest_key
from gateway.cli import main
from gateway.detect import Detector, extract_texts
from gateway.detect.findings import Finding
from gateway.policy import (
    ComparisonReport,
    Decision,
    PolicyStore,
    RequestFacts,
    decide,
    load_policy_text,
)
from pki.secret import Secret
from pki.signing import FileSigner
from tests.audit.helpers import assert_no_text_in_trail
from tests.detect.pii_match import load_corpus
from tests.fixtures.pki import CertPair, TestPKI
from tests.fixtures.upstream import RecordingUpstream
from tests.gateway.conftest import RunningGateway, billing, start_gateway  # noqa: F401 (fixtures)
from tests.gateway.test_gateway_policy import policy_gateway  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = (ROOT / "policies" / "default.yaml").read_text(encoding="utf-8")

# The live policy: the default one, with a header rule in front (so the trail keeps x-team).
LIVE = DEFAULT.replace(
    "rules:\n",
    "rules:\n"
    "  - id: team-red-onprem\n"
    "    when: {header: {x-team: [red]}}\n"
    "    then: {route: onprem}\n",
    1,
)
# The candidate: the header rule now matches "blue", and contact details may go managed.
CANDIDATE = LIVE.replace("x-team: [red]", "x-team: [blue]").replace(
    "        any: [EMAIL_ADDRESS, PHONE_NUMBER, IP_ADDRESS]\n    then:\n      route: onprem\n",
    "        any: [EMAIL_ADDRESS, PHONE_NUMBER, IP_ADDRESS]\n    then:\n      route: openai\n"
    "      sanitize: {default: pseudonymize}\n",
)
GLOB_CANDIDATE = LIVE.replace("x-team: [red]", "x-team: ['b*']")

IDENTITIES = ("spiffe://bastion.internal/svc/billing", "spiffe://bastion.internal/svc/claims")
MODELS = ("chat-default", "restricted")
ENTITY_SETS: tuple[tuple[tuple[str, float], ...], ...] = (
    (),
    (("PERSON", 0.85),),
    (("PERSON", 0.85), ("PERSON", 0.6)),
    (("EMAIL_ADDRESS", 1.0),),
    (("EMAIL_ADDRESS", 0.4),),  # below the threshold: ignored by the engine
    (("PHONE_NUMBER", 0.75), ("LOCATION", 0.85)),
    (("US_SSN", 0.85), ("EMAIL_ADDRESS", 1.0)),
    (("AWS_ACCESS_KEY", 1.0),),
)
TEAMS = (None, "red", "blue", "green")


def _facts() -> list[RequestFacts]:
    out = []
    for identity, model, entities, team in (
        (i, m, e, t) for i in IDENTITIES for m in MODELS for e in ENTITY_SETS for t in TEAMS
    ):
        findings = tuple(
            Finding(kind, score, f"messages[0].content#{n}", n, n + 3, "test")
            for n, (kind, score) in enumerate(entities)
        )
        headers = {"x-team": team} if team else {}
        out.append(RequestFacts(identity, model, "/v1/chat/completions", findings, headers))
    return out


def _inputs(facts: RequestFacts, key: Any) -> DecisionInputs:
    stats: dict[str, tuple[int, float]] = {}
    for f in facts.findings:
        count, best = stats.get(f.entity_type, (0, f.score))
        stats[f.entity_type] = (count + 1, max(best, f.score))
    team = facts.headers.get("x-team")
    return DecisionInputs(
        entities=stats,
        headers={"x-team": None if team is None else header_digest(key, "x-team", team)},
        threshold=0.5,  # the live policy's (policies/default.yaml)
    )


def _record(
    facts: RequestFacts, decision: Decision, n: int, inputs: DecisionInputs | None
) -> DecisionRecord:
    return DecisionRecord(
        identity=facts.identity,
        client_addr="127.0.0.1:1",
        endpoint=facts.endpoint,
        model=facts.model,
        request_id=f"req-{n}",
        entities={f.entity_type: 1 for f in facts.findings},
        rule_id=decision.rule_id,
        action=decision.action.value,
        route=decision.route,
        policy_version=decision.policy_version,
        operations={k: v.value for k, v in decision.operations.items()},
        inputs=inputs,
    )


class Trail:
    def __init__(self, tmp: Path) -> None:
        self.db = tmp / "audit.db"
        self.key_file = tmp / "digest.key"
        self.key_file.write_text("k" * 48)
        self.config = AuditConfig(
            path=self.db, digest_key_file=self.key_file, checkpoint_interval_s=3600
        )
        self.live = load_policy_text(LIVE)
        self.facts = _facts()
        self.ids: list[str] = []
        self.times: list[str] = []
        key = audit_digest_key(self.config)
        signer = FileSigner.generate(tmp / "signing.pem", key_id="audit")

        async def write() -> None:
            trail = open_audit_trail(self.config, signer)
            for n, facts in enumerate(self.facts):
                record = _record(facts, decide(facts, self.live), n, _inputs(facts, key))
                self.ids.append(await trail.append_decision(record))
            # Not replayable: an older record (no inputs), a rate-limit denial, a fail-closed
            # decision, static routing (no policy, nothing scanned).
            facts = self.facts[1]
            old = _record(facts, decide(facts, self.live), 900, None)
            self.old_id = await trail.append_decision(old)
            limited = Decision(decide(facts, self.live).action, None, "rate-limit", "none")
            self.limited_id = await trail.append_decision(_record(facts, limited, 901, None))
            residual = Decision(decide(facts, self.live).action, "onprem", "error:residual", "v")
            await trail.append_decision(_record(facts, residual, 902, _inputs(facts, key)))
            static = Decision(decide(facts, self.live).action, "local", "static", "static")
            await trail.append_decision(_record(facts, static, 903, _inputs(facts, key)))
            await trail.close()

        asyncio.run(write())

    def snapshot(self) -> dict[str, str]:
        """Digest of the trail's data: the database file and its WAL's frames (a reader of a
        WAL database makes SQLite create an empty WAL and its shared-memory index, which hold
        no data; any write would put frames in the WAL or change the file)."""
        out = {}
        for suffix in ("", "-wal"):
            path = Path(f"{self.db}{suffix}")
            data = path.read_bytes() if path.exists() else b""
            out[suffix or "db"] = hashlib.sha256(data).hexdigest()
        return out


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    return Trail(tmp_path_factory.mktemp("replay"))


def _expected(trail: Trail, candidate_text: str) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    """Independently: the candidate's decide() on the facts each decision was taken on."""
    candidate = load_policy_text(candidate_text)
    out: dict[tuple[str, str, str, str], dict[str, Any]] = defaultdict(
        lambda: {"count": 0, "identities": set(), "models": set(), "ids": set()}
    )
    for facts, decision_id in zip(trail.facts, trail.ids, strict=True):
        old, new = decide(facts, trail.live), decide(facts, candidate)
        if (old.rule_id, old.action, old.route, dict(old.operations)) == (
            new.rule_id,
            new.action,
            new.route,
            dict(new.operations),
        ):
            continue
        entry = out[(old.rule_id, new.rule_id, old.action.value, new.action.value)]
        entry["count"] += 1
        entry["identities"].add(facts.identity)
        entry["models"].add(facts.model)
        entry["ids"].add(decision_id)
    return dict(out)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 0, capsys.readouterr()
    return capsys.readouterr().out


def test_replay_reports_exactly_the_changes_the_edit_implies(
    trail: Trail, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Per (old rule -> new rule, old action -> new action): the count, identities, models and
    sample ids equal what the candidate's decide() gives on the same facts; records without
    inputs and decisions not taken by the rules are counted as not replayable."""
    policy = tmp_path / "candidate.yaml"
    policy.write_text(CANDIDATE)
    before = trail.snapshot()
    argv = ["policy", "replay", "--audit", "--sqlite", str(trail.db), "--policy", str(policy)]
    report = json.loads(_run([*argv, "--digest-key-file", str(trail.key_file), "--json"], capsys))
    expected = _expected(trail, CANDIDATE)
    assert expected, "the edit must change some decisions, or this test proves nothing"
    got = {
        (c["old_rule"], c["new_rule"], c["old_action"], c["new_action"]): c
        for c in report["changes"]
    }
    assert set(got) == set(expected)
    for key, want in expected.items():
        change = got[key]
        assert change["count"] == want["count"], key
        assert set(change["identities"]) == want["identities"], key
        assert set(change["models"]) == want["models"], key
        assert change["sample_decision_ids"], key
        assert set(change["sample_decision_ids"]) <= want["ids"], key
    assert report["decisions"] == len(trail.facts) + 4
    assert report["replayed"] == len(trail.facts)
    assert report["changed"] == sum(w["count"] for w in expected.values())
    assert sum(report["not_replayable"].values()) == 4
    assert any("policy version 'static'" in r for r in report["not_replayable"])
    assert any("older record format" in r for r in report["not_replayable"])
    assert any("'rate-limit'" in r for r in report["not_replayable"])
    assert any("'error:residual'" in r for r in report["not_replayable"])

    text = _run([*argv, "--digest-key-file", str(trail.key_file)], capsys)
    for (old_rule, new_rule, old_action, new_action), want in expected.items():
        line = (
            f"{old_rule} -> {new_rule}, {old_action} -> {new_action}: {want['count']} decision(s)"
        )
        assert line in text
    assert "not replayable: 1 (older record format" in text
    assert trail.snapshot() == before, "replay wrote to the trail it read"


@pytest.mark.parametrize(
    ("candidate", "key", "reason"),
    [
        (CANDIDATE, False, "needs the audit digest key"),
        (GLOB_CANDIDATE, True, "matches header 'x-team' with a glob"),
    ],
    ids=["no-digest-key", "glob-on-a-digest"],
)
def test_headers_replay_only_what_a_digest_can_answer(
    trail: Trail,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    candidate: str,
    key: bool,
    reason: str,
) -> None:
    """A recorded header is a keyed digest: it answers "equals this literal" (with the key)
    and nothing else, so a request that carried the header is not replayable without the key
    or under a glob; requests without the header still are."""
    policy = tmp_path / "candidate.yaml"
    policy.write_text(candidate)
    argv = ["policy", "replay", "--sqlite", str(trail.db), "--policy", str(policy), "--json"]
    if key:
        argv += ["--digest-key-file", str(trail.key_file)]
    report = json.loads(_run(argv, capsys))
    with_header = sum(1 for f in trail.facts if "x-team" in f.headers)
    reasons = {r: n for r, n in report["not_replayable"].items() if reason in r}
    assert sum(reasons.values()) == with_header
    assert report["replayed"] == len(trail.facts) - with_header


def test_replay_window(trail: Trail, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--since/--until bound the decisions replayed to [since, until)."""
    with_times = [r for r in open_store(trail.config, read_only=True).records()]
    middle = with_times[len(with_times) // 2].time
    policy = tmp_path / "candidate.yaml"
    policy.write_text(CANDIDATE)
    base = ["policy", "replay", "--sqlite", str(trail.db), "--policy", str(policy), "--json"]
    before = json.loads(_run([*base, "--until", middle], capsys))
    after = json.loads(_run([*base, "--since", middle], capsys))
    assert before["decisions"] + after["decisions"] == len(with_times)
    assert before["window"]["until"] == middle


def test_replay_opens_the_trail_read_only(trail: Trail) -> None:
    """The store replay reads through refuses writes (SQLite mode=ro)."""
    store = open_store(trail.config, read_only=True)
    try:
        with pytest.raises(AuditUnavailable):
            store.append([Entry("dec_" + "0" * 24, "decision", b"{}")])
    finally:
        store.close()


def test_shadow_and_replay_share_the_comparison(trail: Trail, tmp_path: Path) -> None:
    """The live shadow policy, fed the same facts, counts the same changes with the same keys,
    identities and models as replay: one comparison, one report shape."""
    live, shadow = tmp_path / "live.yaml", tmp_path / "shadow.yaml"
    live.write_text(LIVE)
    shadow.write_text(CANDIDATE)
    store = PolicyStore(live, shadow_path=shadow)
    store.reload(force=True)
    for facts in trail.facts:
        store.shadow_compare(facts)
    report = store.shadow_report()
    assert report is not None
    shadowed = report.to_json()
    expected = _expected(trail, CANDIDATE)
    got = {
        (c["old_rule"], c["new_rule"], c["old_action"], c["new_action"]): c
        for c in shadowed["changes"]
    }
    assert {k: v["count"] for k, v in got.items()} == {k: v["count"] for k, v in expected.items()}
    assert all(set(got[k]["identities"]) == v["identities"] for k, v in expected.items())
    assert shadowed["mode"] == "shadow"
    replayed = ComparisonReport(mode="replay", candidate=load_policy_text(CANDIDATE)).to_json()
    assert set(shadowed) == set(replayed)  # one report shape
    assert store.header_names() == frozenset({"x-team"})


# -- a trail written by the real gateway -------------------------------------------------------

# The edit: contact details may now go to the managed API, pseudonymized, and a date of birth
# is no longer a structured identifier (it falls through to the names-and-addresses rule).
EDITED_DEFAULT = DEFAULT.replace("          - DATE_OF_BIRTH\n", "").replace(
    "        any: [EMAIL_ADDRESS, PHONE_NUMBER, IP_ADDRESS]\n    then:\n      route: onprem\n",
    "        any: [EMAIL_ADDRESS, PHONE_NUMBER, IP_ADDRESS]\n    then:\n      route: openai\n"
    "      sanitize: {default: pseudonymize}\n",
)
CORPUS = load_corpus() or []
SUBSET = CORPUS[::6]  # 50 items: both kinds, several languages, fast enough for every run


@pytest.mark.skipif(not CORPUS, reason="../shared/pii_dev/pii_dev.jsonl is not present")
def test_replay_of_a_real_gateway_trail(
    policy_gateway: Callable[..., RunningGateway],  # noqa: F811 (the imported fixture)
    billing: CertPair,  # noqa: F811 (the imported fixture)
    test_pki: TestPKI,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The real gateway (default policy, real detection) records a subset of the dev corpus;
    replaying its trail under an edited policy reports exactly what the edited policy's
    decide() gives on the findings detection produces for the same requests, computed here
    independently, in JSON and in text."""
    assert EDITED_DEFAULT != DEFAULT
    gateway = policy_gateway()
    claims = test_pki.client("svc/claims")
    sent: list[tuple[str, str, dict[str, Any]]] = []  # (decision id, identity, body)
    for n, item in enumerate(SUBSET):
        cert = billing if n % 2 == 0 else claims
        body = {**item["request"], "model": "chat-default", "stream": False}
        with gateway.client(cert) as client:
            response = client.post("/v1/chat/completions", json=body)
        decision_id = response.headers["x-bastion-decision-id"]
        identity = f"spiffe://bastion.internal/{'svc/billing' if n % 2 == 0 else 'svc/claims'}"
        sent.append((decision_id, identity, body))

    # Independently: detection on each request, then both policies' decide().
    live = load_policy_text(DEFAULT)
    edited = load_policy_text(EDITED_DEFAULT)
    detector = Detector(live.detection)
    store = open_store(AuditConfig(path=tmp_path / "audit.db"), read_only=True)
    try:
        recorded = {
            r.record_id: json.loads(r.body)["data"] for r in store.records() if r.kind == "decision"
        }
    finally:
        store.close()
    expected: dict[tuple[str, str, str, str], dict[str, Any]] = defaultdict(
        lambda: {"count": 0, "identities": set(), "ids": set()}
    )
    not_replayable = 0
    for decision_id, identity, body in sent:
        data = recorded[decision_id]
        if data["rule_id"].startswith("error:"):
            not_replayable += 1  # failed closed after sanitizing: not the rules' decision
            continue
        facts = RequestFacts(
            identity,
            "chat-default",
            "/v1/chat/completions",
            tuple(detector.analyze(extract_texts(body))),
        )
        old, new = decide(facts, live), decide(facts, edited)
        assert (old.rule_id, old.action.value) == (data["rule_id"], data["action"]), decision_id
        if (old.rule_id, old.action, old.route, dict(old.operations)) == (
            new.rule_id,
            new.action,
            new.route,
            dict(new.operations),
        ):
            continue
        entry = expected[(old.rule_id, new.rule_id, old.action.value, new.action.value)]
        entry["count"] += 1
        entry["identities"].add(identity)
        entry["ids"].add(decision_id)
    assert expected, "the edit changes no decision of the subset: the test would prove nothing"

    policy = tmp_path / "edited.yaml"
    policy.write_text(EDITED_DEFAULT)
    argv = [
        "policy",
        "replay",
        "--audit",
        "--config",
        str(gateway.config_path),
        "--policy",
        str(policy),
    ]
    report = json.loads(_run([*argv, "--json"], capsys))
    got = {
        (c["old_rule"], c["new_rule"], c["old_action"], c["new_action"]): c
        for c in report["changes"]
    }
    assert {k: c["count"] for k, c in got.items()} == {k: e["count"] for k, e in expected.items()}
    for key, want in expected.items():
        assert set(got[key]["identities"]) == want["identities"]
        assert got[key]["models"] == ["chat-default"]
        assert set(got[key]["sample_decision_ids"]) <= want["ids"]
    assert report["decisions"] == len(sent)
    assert sum(report["not_replayable"].values()) == not_replayable
    text = _run(argv, capsys)
    for (old_rule, new_rule, old_action, new_action), want in expected.items():
        assert (
            f"{old_rule} -> {new_rule}, {old_action} -> {new_action}: {want['count']} decision(s)"
            in text
        )
    assert_no_text_in_trail(
        tmp_path / "audit.db",
        [
            m["content"]
            for _, _, b in sent
            for m in b["messages"]
            if isinstance(m.get("content"), str) and len(m["content"]) >= 8
        ],
    )


def _body(data: dict[str, Any], n: int) -> bytes:
    from gateway.audit._records import canonical_data, envelope

    raw = canonical_data(data, limit=65536)
    return envelope(
        raw, record_id=f"dec_{n:024x}", kind="decision", seq=n, time="2026-01-01T00:00:00.000000Z"
    )


def _data(**changes: Any) -> dict[str, Any]:
    facts = _facts()[5]
    live = load_policy_text(LIVE)
    record = _record(facts, decide(facts, live), 0, _inputs(facts, Secret("k" * 64)))
    return {**record.to_data(), **changes}


TRICKY: list[tuple[str, list[bytes]]] = [
    ("same-facts-other-request", [_body(_data(request_id=f"r{n}"), n) for n in range(3)]),
    (
        "header-named-like-a-key",
        [
            _body(_data(inputs={"v": 1, "entities": {}, "headers": {"rule_id": None}}), 1),
            _body(_data(inputs={"v": 1, "entities": {}, "headers": {"x": None}}), 2),
        ],
    ),
    (
        "duplicate-key-after-the-slices",
        [
            _body(_data(), 1),
            _body(_data(), 2).replace(b',"upstream":null', b',"upstream":null,"rule_id":"other"'),
        ],
    ),
    ("not-json", [b'{"data":{"action":"onprem"', _body(_data(), 2)]),
]


@pytest.mark.parametrize("bodies", [b for _, b in TRICKY], ids=[i for i, _ in TRICKY])
def test_memo_never_changes_an_answer(bodies: list[bytes]) -> None:
    """Replaying records together (sharing the memo) gives the same report as replaying each
    alone (a full parse every time), also for bodies built to confuse the byte slices."""
    from gateway.policy import replay_decisions

    candidate = load_policy_text(CANDIDATE)
    rows = [(f"dec_{n}", "t", body) for n, body in enumerate(bodies)]
    together = replay_decisions(rows, candidate).to_json()
    alone = [replay_decisions([row], candidate).to_json() for row in rows]
    assert together["decisions"] == sum(a["decisions"] for a in alone)
    assert together["changed"] == sum(a["changed"] for a in alone)
    merged: dict[str, int] = {}
    for a in alone:
        for reason, count in a["not_replayable"].items():
            merged[reason] = merged.get(reason, 0) + count
    assert together["not_replayable"] == merged
    counts: dict[tuple[str, str], int] = {}
    for a in alone:
        for c in a["changes"]:
            counts[(c["old_rule"], c["new_rule"])] = (
                counts.get((c["old_rule"], c["new_rule"]), 0) + c["count"]
            )
    assert {(c["old_rule"], c["new_rule"]): c["count"] for c in together["changes"]} == counts


HEADER_POLICY = DEFAULT.replace(
    "rules:\n",
    "rules:\n"
    "  - id: team-red-onprem\n"
    "    when: {header: {x-team: [red]}}\n"
    "    then: {route: onprem}\n",
    1,
)


def test_real_gateway_records_header_digests_and_replays_them(
    policy_gateway: Callable[..., RunningGateway],  # noqa: F811 (the imported fixture)
    billing: CertPair,  # noqa: F811 (the imported fixture)
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """When the live policy reads a header, the gateway's decision records keep its keyed
    digest (never the value), and replay with the config's digest key re-decides a candidate
    that matches another literal."""
    gateway = policy_gateway(HEADER_POLICY)
    for team in ("red", "blue", None):
        headers = {"x-team": team} if team else {}
        with gateway.client(billing, headers=headers) as client:
            response = client.post(
                "/v1/chat/completions",
                json={"model": "chat-default", "messages": [{"role": "user", "content": "hi"}]},
            )
        assert response.status_code == 200
    config = AuditConfig(path=tmp_path / "audit.db", digest_key_file=tmp_path / "digest.key")
    key = audit_digest_key(config)
    store = open_store(config, read_only=True)
    try:
        kept = [
            json.loads(r.body)["data"]["inputs"]["headers"]
            for r in store.records()
            if r.kind == "decision"
        ]
    finally:
        store.close()
    assert kept == [
        {"x-team": header_digest(key, "x-team", "red")},
        {"x-team": header_digest(key, "x-team", "blue")},
        {"x-team": None},
    ]
    policy = tmp_path / "candidate.yaml"
    policy.write_text(HEADER_POLICY.replace("x-team: [red]", "x-team: [blue]"))
    argv = ["policy", "replay", "--config", str(gateway.config_path), "--policy", str(policy)]
    report = json.loads(_run([*argv, "--json"], capsys))
    changes = {(c["old_rule"], c["new_rule"]): c["count"] for c in report["changes"]}
    assert changes == {("team-red-onprem", "default"): 1, ("default", "team-red-onprem"): 1}


def test_report_stays_bounded() -> None:
    """However many distinct identities, models, samples and reasons a trail holds, the report
    lists a bounded number and counts the rest."""
    from gateway.policy.replay import MAX_NAMES, MAX_REASONS, MAX_SAMPLES, DecisionOutcome

    report = ComparisonReport(mode="replay", candidate=load_policy_text(CANDIDATE))
    old = DecisionOutcome("a", "onprem", "onprem", ())
    new = DecisionOutcome("b", "managed", "openai", ())
    for n in range(MAX_NAMES + 7):
        report.add(old, new, identity=f"spiffe://x/{n}", model=f"m{n}", sample_id=f"dec_{n}")
    for n in range(MAX_REASONS + 5):
        report.skip(f"reason {n}")
    out = report.to_json()
    (change,) = out["changes"]
    assert change["count"] == MAX_NAMES + 7
    assert len(change["identities"]) == MAX_NAMES
    assert change["more_identities"] == 7
    assert change["more_models"] == 7
    assert len(change["sample_decision_ids"]) == MAX_SAMPLES
    assert len(out["not_replayable"]) == MAX_REASONS + 1
    assert sum(out["not_replayable"].values()) == MAX_REASONS + 5


def test_shadow_week_then_replay_month_read_the_same(
    start_gateway: Callable[..., RunningGateway],  # noqa: F811 (the imported fixture)
    billing: CertPair,  # noqa: F811 (the imported fixture)
    test_pki: TestPKI,
    recording_upstream: RecordingUpstream,
    onprem_upstream: RecordingUpstream,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A gateway runs the live policy with the candidate as its shadow; the ops endpoint's
    shadow report and `policy replay` of the same trail under the same candidate list the same
    changes, in the same shape."""
    live, shadow = tmp_path / "live.yaml", tmp_path / "shadow.yaml"
    live.write_text(HEADER_POLICY)
    shadow.write_text(
        EDITED_DEFAULT.replace(
            "rules:\n",
            "rules:\n"
            "  - id: team-red-onprem\n"
            "    when: {header: {x-team: [blue]}}\n"
            "    then: {route: onprem}\n",
            1,
        )
    )
    key = tmp_path / "digest.key"
    key.write_text("k" * 48)
    gateway = start_gateway(
        upstreams={
            "openai": {"kind": "managed", "base_url": recording_upstream.url},
            "worker": {"kind": "onprem", "base_url": onprem_upstream.url},
        },
        models={"chat-default": {"upstream": "worker"}, "restricted": {"upstream": "worker"}},
        policy={"file": str(live), "shadow": str(shadow)},
        audit={
            "backend": "sqlite",
            "path": str(tmp_path / "audit.db"),
            "digest_key_file": str(key),
        },
        signing={"key_file": str(tmp_path / "signing.key")},
    )
    claims = test_pki.client("svc/claims")
    for n, item in enumerate(SUBSET[:16]):
        team = ("red", "blue", None)[n % 3]
        with gateway.client(
            billing if n % 2 else claims, headers={"x-team": team} if team else {}
        ) as client:
            client.post(
                "/v1/chat/completions",
                json={**item["request"], "model": "chat-default", "stream": False},
            )
    shadowed = httpx2.get(gateway.ops_url + "/policy/shadow").json()
    argv = [
        "policy",
        "replay",
        "--config",
        str(gateway.config_path),
        "--policy",
        str(shadow),
        "--json",
    ]
    replayed = json.loads(_run(argv, capsys))

    def changes(report: dict[str, Any]) -> dict[tuple[str, ...], tuple[int, list[str], list[str]]]:
        return {
            (c["old_rule"], c["new_rule"], c["old_action"], c["new_action"]): (
                c["count"],
                c["identities"],
                c["models"],
            )
            for c in report["changes"]
        }

    assert changes(replayed), "the shadow policy must differ on this traffic"
    # None of these requests fails closed after its decision (which replay would count as not
    # replayable while shadow compared it), so the two must agree exactly.
    assert replayed["not_replayable"] == {}
    assert changes(shadowed) == changes(replayed)
    assert set(shadowed) == set(replayed)
    assert shadowed["mode"] == "shadow"
    assert shadowed["decisions"] == replayed["decisions"]


@pytest.mark.parametrize(
    ("threshold", "replayable"), [("0.3", False), ("0.7", True)], ids=["lower", "higher"]
)
def test_candidate_threshold_against_the_recorded_one(
    trail: Trail,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    threshold: str,
    replayable: bool,
) -> None:
    """Detection kept only findings at or above the live threshold (0.5): a candidate with a
    higher one is replayed (it only ignores more), one with a lower one is not (it would have
    seen findings the trail never held)."""
    policy = tmp_path / "candidate.yaml"
    policy.write_text(CANDIDATE.replace("threshold: 0.5", f"threshold: {threshold}", 1))
    argv = ["policy", "replay", "--sqlite", str(trail.db), "--policy", str(policy), "--json"]
    report = json.loads(_run([*argv, "--digest-key-file", str(trail.key_file)], capsys))
    below = sum(n for r, n in report["not_replayable"].items() if "is below the 0.5" in r)
    assert report["replayed"] == (len(trail.facts) if replayable else 0)
    assert below == (0 if replayable else len(trail.facts))
