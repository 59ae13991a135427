"""Offline PII recognizers: a pattern per entity type plus a validator
(checksums where the type has one) and context rules that keep look-alike
numbers (order ids, invoices, dates, versions) out.

Presidio's pattern recognizers were the model; presidio-analyzer itself imports
spaCy, so the recognizers are written here with the same validators.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import phonenumbers

from carafe.guards.verdict import Span

PHONE_REGIONS = ("US", "GB", "DE")
# Words right before a number that make it an identifier of a thing, not a person.
_NOT_PERSONAL = re.compile(
    r"\b(order|invoice|inv|ticket|tracking|ref(erence)?|po|sku|part|item|serial|build|version|release|case|"
    r"transaction|batch|lot|model|id|contract|booking|shipment)\s*(no\.?|nr\.?|number|#)?\W{0,4}$",
    re.IGNORECASE,
)
_VERSION_BEFORE = re.compile(
    r"(\bv|version\s*|release\s*|build\s*|firmware\s*|python\s*|ver\.?\s*|mask\s*(to\s*|of\s*|is\s*|:\s*)?)$",
    re.IGNORECASE,
)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(raw: str) -> bool:
    iban = re.sub(r"\s", "", raw).upper()
    if not 15 <= len(iban) <= 34 or not iban[:2].isalpha() or not iban[2:4].isdigit():
        return False
    expected = _IBAN_LENGTHS.get(iban[:2])
    if expected is not None and len(iban) != expected:
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


_IBAN_LENGTHS = {
    "DE": 22,
    "GB": 22,
    "FR": 27,
    "ES": 24,
    "IT": 27,
    "NL": 18,
    "BE": 16,
    "CH": 21,
    "AT": 20,
    "IE": 22,
    "PL": 28,
    "PT": 25,
    "SE": 24,
    "DK": 18,
    "NO": 15,
    "FI": 18,
    "LU": 20,
}


def card_ok(raw: str) -> bool:
    digits = re.sub(r"\D", "", raw)
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    iin_ok = (
        digits[0] == "4"
        or digits[:2] in {"51", "52", "53", "54", "55", "34", "37", "35", "36", "38", "65"}
        or 2221 <= int(digits[:4]) <= 2720
        or digits[:4] == "6011"
        or 300 <= int(digits[:3]) <= 305
    )
    return iin_ok and luhn_ok(digits)


def ssn_ok(raw: str) -> bool:
    d = re.sub(r"\D", "", raw)
    area, group, serial = d[:3], d[3:5], d[5:]
    return area not in {"000", "666"} and area[0] != "9" and group != "00" and serial != "0000" and len(set(d)) > 1


def nino_ok(raw: str) -> bool:
    prefix = raw[:2].upper()
    return prefix not in {"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"}


def de_tax_id_ok(raw: str) -> bool:
    d = re.sub(r"\D", "", raw)
    if len(d) != 11 or d[0] == "0":
        return False
    product = 10
    for ch in d[:10]:
        s = (int(ch) + product) % 10 or 10
        product = (s * 2) % 11
    check = (11 - product) % 10
    return check == int(d[10])


def es_nif_ok(raw: str) -> bool:
    s = raw.upper().replace("-", "").replace(" ", "")
    letters = "TRWAGMYFPDXBNJZSQVHLCKE"
    if s[0] in "XYZ":
        s = str("XYZ".index(s[0])) + s[1:]
    return s[:-1].isdigit() and letters[int(s[:-1]) % 23] == s[-1]


def fr_nir_ok(raw: str) -> bool:
    d = re.sub(r"\s", "", raw).upper()
    body, key = d[:13], d[13:]
    body = body.replace("2A", "19").replace("2B", "18")
    return body.isdigit() and key.isdigit() and 97 - int(body) % 97 == int(key)


def ip_ok(raw: str) -> bool:
    try:
        addr = ipaddress.ip_address(raw)
    except ValueError:
        return False
    return not (addr.version == 6 and raw.count(":") < 3)


@dataclass(frozen=True)
class Recognizer:
    """A regex for candidates of one entity type and a validator for each candidate."""

    kind: str
    pattern: re.Pattern[str]
    validate: Callable[[str], bool]
    context: re.Pattern[str] | None = None  # if set, must appear within 40 chars before
    reject_before: re.Pattern[str] | None = None  # if it matches right before, not PII


_CTX_DE_TAX = re.compile(r"(steuer|tax|idnr|identifikationsnummer|\bTIN\b)", re.IGNORECASE)
_CTX_SSN = re.compile(r"(ssn|social\s+security)", re.IGNORECASE)

RECOGNIZERS: tuple[Recognizer, ...] = (
    Recognizer(
        "EMAIL", re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b"), lambda s: True
    ),
    Recognizer(
        "CREDIT_CARD", re.compile(r"(?<![\d\-])(?:\d[ \-]?){12,18}\d(?![\d\-])"), card_ok, reject_before=_VERSION_BEFORE
    ),
    Recognizer("IBAN", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"), iban_ok),
    Recognizer(
        "US_SSN", re.compile(r"(?<![\d\-])\d{3}([- ])\d{2}\1\d{4}(?![\d\-])"), ssn_ok, reject_before=_NOT_PERSONAL
    ),
    Recognizer("US_SSN", re.compile(r"(?<!\d)\d{9}(?!\d)"), ssn_ok, context=_CTX_SSN),
    Recognizer("UK_NINO", re.compile(r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"), nino_ok),
    Recognizer("DE_TAX_ID", re.compile(r"(?<!\d)[1-9]\d(?: ?\d{3}){3}(?!\d)"), de_tax_id_ok, context=_CTX_DE_TAX),
    Recognizer("ES_NIF", re.compile(r"\b(?:\d{8}|[XYZ]\d{7})-?[A-Z]\b"), es_nif_ok),
    Recognizer(
        "FR_NIR", re.compile(r"(?<!\d)[12] ?\d{2} ?\d{2} ?(?:\d{2}|2A|2B) ?\d{3} ?\d{3} ?\d{2}(?!\d)"), fr_nir_ok
    ),
    Recognizer(
        "IP_ADDRESS", re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\d)"), ip_ok, reject_before=_VERSION_BEFORE
    ),
    Recognizer("IP_ADDRESS", re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"), ip_ok),
)


def _phones(text: str) -> Iterator[Span]:
    seen: set[tuple[int, int]] = set()
    for region in PHONE_REGIONS:
        for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
            key = (m.start, m.end)
            if key in seen:
                continue
            seen.add(key)
            before = text[max(0, m.start - 24) : m.start]
            digits_only = re.fullmatch(r"\+?\d+", m.raw_string) is not None
            if _NOT_PERSONAL.search(before) and not m.raw_string.startswith("+"):
                continue
            if digits_only and not m.raw_string.startswith("+") and len(m.raw_string) > 11:
                continue  # long bare digit runs are ids far more often than phones
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", m.raw_string):
                continue  # an ISO date
            yield Span(m.start, m.end, "PHONE")


def find_pii(text: str, kinds: frozenset[str] | set[str]) -> list[Span]:
    """Validated PII spans in ``text``, non-overlapping, longest first on ties."""
    found: list[Span] = []
    for rec in RECOGNIZERS:
        if rec.kind not in kinds:
            continue
        for m in rec.pattern.finditer(text):
            raw = m.group(0).strip()
            if not raw or not rec.validate(raw):
                continue
            before = text[max(0, m.start() - 40) : m.start()]
            if rec.context is not None and not rec.context.search(before):
                continue
            if rec.reject_before is not None and rec.reject_before.search(before):
                continue
            found.append(Span(m.start(), m.start() + len(m.group(0).rstrip()), rec.kind))
    if "PHONE" in kinds:
        found.extend(_phones(text))
    found.sort(key=lambda s: (s.start, -(s.end - s.start)))
    merged: list[Span] = []
    for span in found:
        if merged and span.start < merged[-1].end:
            continue  # overlaps a longer/earlier hit (a card number is not also a phone)
        merged.append(span)
    return merged
