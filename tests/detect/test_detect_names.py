"""Names the detector used to miss or misread (issue 13, item 5): "Last, First", lowercase names
after weak introducing phrases, ALL-CAPS names, several particles, a name right after a
capitalized sentence-start word, and brand names that are not people (item 6). Recall comes from
language cues, context and the NER model (on a recased copy where the case hides the name), never
from a list of names. Every value here is made up for this file."""

from __future__ import annotations

import pytest

from gateway.detect import Detector
from tests.detect.conftest import find_in
from tests.detect.names_independent import NAMED_SENTENCES, leaked_names

FOUND = [
    # (id, text, the text a PERSON finding must cover)
    (
        "last-first",
        "Please update the file for Kowalczyk, Marta before Friday.",
        "Kowalczyk, Marta",
    ),
    ("last-first-cue", "Patient: Oyelaran, Tobi. Next visit in May.", "Oyelaran, Tobi"),
    ("last-first-middle", "Signed: Brennan, Aoife M. on the 3rd.", "Brennan, Aoife"),
    ("lower-with", "I had lunch with tobias reinholt yesterday.", "tobias reinholt"),
    ("lower-dr", "The results went to dr. amara okonkwo last week.", "amara okonkwo"),
    ("lower-colleague", "my colleague henrik solberg will join the call", "henrik solberg"),
    ("lower-ask", "ask priya raghunathan about the invoice", "priya raghunathan"),
    ("lower-cc", "cc dmitri volkonsky on the reply please", "dmitri volkonsky"),
    ("lower-spoke-to", "I spoke to farida haddad this morning about it.", "farida haddad"),
    ("lower-thanks", "thanks to wen jiahui for the quick fix", "wen jiahui"),
    ("upper-no-cue", "PLEASE SEND THE FORMS TO ROBERT KOWALSKI BY FRIDAY.", "ROBERT KOWALSKI"),
    ("upper-in-text", "Escalated by GRETA LINDQVIST after the outage.", "GRETA LINDQVIST"),
    ("two-particles", "Juan de la Cruz called about the refund.", "Juan de la Cruz"),
    (
        "two-particles-van-der",
        "Contract signed by Ludwig van der Berg yesterday.",
        "Ludwig van der Berg",
    ),
    ("two-particles-cue", "Customer: Maria dos Santos Oliveira.", "Maria dos Santos Oliveira"),
    ("the-name", "The Imogen Castellanos account was closed on Monday.", "Imogen Castellanos"),
    ("this-name", "This Bartholomew Okafor ticket needs an owner.", "Bartholomew Okafor"),
]


@pytest.mark.parametrize(("text", "covered"), [c[1:] for c in FOUND], ids=[c[0] for c in FOUND])
def test_name_is_found(detector: Detector, text: str, covered: str) -> None:
    """A PERSON finding covers the whole name as written."""
    found = find_in(detector, text)
    assert any(t == "PERSON" and covered in span for t, span in found), found


NOT_PERSONS = [
    ("brands", "Pay with Mastercard or Visa, not American Express."),
    ("brand-tier", "Mastercard Gold and Visa Infinite cards are accepted."),
    ("with-common-words", "Handle it with great care and send it with express shipping."),
    ("cc-common", "cc the whole team and ask legal counsel first."),
    ("upper-heading", "QUARTERLY REVENUE REPORT FOR THE BOARD"),
]


@pytest.mark.parametrize("text", [c[1] for c in NOT_PERSONS], ids=[c[0] for c in NOT_PERSONS])
def test_not_a_person(detector: Detector, text: str) -> None:
    """Brand names, common words after a weak cue and headings are not people."""
    persons = [span for t, span in find_in(detector, text) if t == "PERSON"]
    assert persons == [], persons


# Measured when written: 4/90 leaked on the first run (before the name-shape rules), 0/90 after.
MAX_INDEPENDENT_LEAK_RATE = 0.02


def test_independent_name_set_leaks_at_most_two_percent(detector: Detector) -> None:
    """On a hand-written set of 90 names in varied sentences and forms (not from the corpus
    generator), at most 2 % still appear after pseudonymize-everything sanitizing."""
    leaked = leaked_names(detector.analyze)
    assert len(leaked) / len(NAMED_SENTENCES) <= MAX_INDEPENDENT_LEAK_RATE, leaked
