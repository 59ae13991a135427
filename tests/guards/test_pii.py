import pytest

from carafe.guards.checks.pii import detect, redact
from carafe.guards.config import GuardsConfig
from tests.guards.conftest import load_rows

KINDS = frozenset(GuardsConfig().pii_entities)


def kinds(text: str) -> list[str]:
    return [s.kind for s in detect(text, KINDS)]


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("write to jane.doe@example.com today", "EMAIL"),
        ("call +44 20 7946 0958 please", "PHONE"),
        ("call (415) 555-0132 tomorrow", "PHONE"),
        ("card 4111 1111 1111 1111 exp 12/27", "CREDIT_CARD"),
        ("IBAN DE89 3704 0044 0532 0130 00", "IBAN"),
        ("my SSN is 123-45-6789", "US_SSN"),
        ("NI number AB 12 34 56 C", "UK_NINO"),
        ("Steuer-IdNr 65929970489", "DE_TAX_ID"),
        ("DNI 12345678Z", "ES_NIF"),
        ("NIR 1 84 12 76 451 089 46", "FR_NIR"),
        ("from 10.0.0.12 at night", "IP_ADDRESS"),
        ("from fe80::1ff:fe23:4567:890a at night", "IP_ADDRESS"),
    ],
)
def test_structured_pii_is_found(text, kind):
    assert kinds(text) == [kind]


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # Luhn fails
        "IBAN DE89 3704 0044 0532 0130 01",  # mod-97 fails
        "SSN 000-45-6789",  # area 000 is never issued
        "DNI 12345678A",  # wrong check letter
        "order #4155550132 shipped",  # an order id shaped like a phone
        "we run version 1.2.3.4 since 2024-11-05",
    ],
)
def test_lookalikes_that_fail_validation_are_not_pii(text):
    assert kinds(text) == []


def test_redaction_modes():
    text = "mail jo@example.com now"
    spans = detect(text, KINDS)
    assert redact(text, spans, "tag") == "mail <EMAIL> now"
    assert redact(text, spans, "mask") == "mail **@*******.*** now"
    hashed = redact(text, spans, "hash")
    assert hashed.startswith("mail <EMAIL:") and "jo@example.com" not in hashed
    assert hashed == redact(text, spans, "hash")  # stable: the same value gets the same token


def test_obfuscated_email_is_redacted_in_the_original_text():
    text = "mail j\u200bo@exa\u200bmple.com now"
    assert redact(text, detect(text, KINDS), "tag") == "mail <EMAIL> now"


def test_eval_set_recall_and_false_positives():
    rows = load_rows("pii_eval.jsonl")
    positives = [r for r in rows if r["label"]]
    negatives = [r for r in rows if not r["label"]]
    hit = sum(set(r["types"]) <= set(kinds(r["text"])) for r in positives)
    false = sum(bool(kinds(r["text"])) for r in negatives)
    assert hit / len(positives) >= 0.95
    assert false / len(negatives) <= 0.05
