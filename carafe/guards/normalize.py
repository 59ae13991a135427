"""Text normalization before checks: lone surrogates, NFKC, zero-width removal,
homoglyph folding, spaced-out letters, whitespace runs.

Checks look at the normalized text so that ``ｉｇｎｏｒｅ``, ``ig\u200bnore``, a
Cyrillic ``іgnоre`` or ``I g n o r e   a l l`` read as ``ignore``, and so that
whitespace padding cannot push an attack out of a check's view: runs of spaces
and blank lines are collapsed *before* any window is cut, and long texts are read
in overlapping windows over their whole length (:func:`windows`), never truncated.
Redactions are computed on the original text, so only checks that never redact
(injection, topics, toxicity) use it. :func:`scrub` keeps the length, so it may be
applied to the original text too (a lone surrogate must not make an encoder raise).
"""

from __future__ import annotations

import re
import unicodedata

# Format characters used to split words invisibly (zero-width space/joiners,
# word joiner, BOM, soft hyphen, bidi controls).
INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")

# Letters from other scripts that look like Latin ones (Cyrillic, Greek, a few
# symbols). NFKC already folds fullwidth and mathematical alphanumerics.
_HOMOGLYPHS = str.maketrans(
    {
        "а": "a",
        "в": "b",
        "е": "e",
        "ё": "e",
        "к": "k",
        "м": "m",
        "н": "h",
        "о": "o",
        "р": "p",
        "с": "c",
        "т": "t",
        "у": "y",
        "х": "x",
        "ѕ": "s",
        "і": "i",
        "ї": "i",
        "ј": "j",
        "ԁ": "d",
        "ɡ": "g",
        "һ": "h",
        "ԛ": "q",
        "ԝ": "w",
        "ӏ": "l",
        "А": "A",
        "В": "B",
        "Е": "E",
        "К": "K",
        "М": "M",
        "Н": "H",
        "О": "O",
        "Р": "P",
        "С": "C",
        "Т": "T",
        "Х": "X",
        "Ѕ": "S",
        "І": "I",
        "Ј": "J",
        "У": "Y",
        "α": "a",
        "ο": "o",
        "ρ": "p",
        "ν": "v",
        "τ": "t",
        "ι": "i",
        "κ": "k",
        "υ": "u",
        "χ": "x",
        "ε": "e",
        "Α": "A",
        "Β": "B",
        "Ε": "E",
        "Ζ": "Z",
        "Η": "H",
        "Ι": "I",
        "Κ": "K",
        "Μ": "M",
        "Ν": "N",
        "Ο": "O",
        "Ρ": "P",
        "Τ": "T",
        "Υ": "Y",
        "Χ": "X",
        "ℓ": "l",
        "ı": "i",
        "ȷ": "j",
    }
)

_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")


def _is_latin_context(text: str) -> bool:
    """Fold homoglyphs only in texts that are mostly Latin: genuine Russian or
    Greek prose must stay as it is."""
    latin = other = 0
    for ch in text:
        if ch.isalpha():
            if ch.isascii():
                latin += 1
            elif ch in _HOMOGLYPH_KEYS:
                other += 1
    return latin > 0 and latin >= other


_HOMOGLYPH_KEYS = frozenset(chr(k) for k in _HOMOGLYPHS)


_SURROGATE = re.compile("[\ud800-\udfff]")
# Single letters joined by a separator, at least four of them: "I g n o r e", "i.g.n.o.r.e", "r-e-v-e-a-l".
_SPACED = re.compile(r"(?<![^\W\d_])(?:[^\W\d_](?: {1,4}|[.\-_*·]|\t)){3,}[^\W\d_](?![^\W\d_])")
_BLANK_LINES = re.compile(r"[ \t]*\n[\s]*")


def scrub(text: str) -> str:
    """``text`` with lone surrogates (not encodable as UTF-8) replaced by U+FFFD.

    Same length, so offsets computed on the result (redactions) fit the original."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def _join_spaced(m: re.Match[str]) -> str:
    """``I g n o r e   a l l`` → ``Ignore all``: a wider gap separates words."""
    words = re.split(r" {2,}|\t", m.group(0))
    return " ".join(re.sub(r"[ .\-_*·]", "", w) for w in words if w.strip())


def collapse_whitespace(text: str) -> str:
    """Runs of spaces → one space, runs of blank lines → one line break."""
    return _BLANK_LINES.sub("\n", _SPACES.sub(" ", text)).strip()


def windows(text: str, size: int, overlap: int = 200) -> list[str]:
    """Overlapping windows of ``size`` characters covering all of ``text``.

    An attack shorter than ``overlap`` lies wholly inside at least one window,
    wherever it sits in the text."""
    if size <= 0 or len(text) <= size:
        return [text]
    step = max(size - overlap, 1)
    starts = list(range(0, len(text) - overlap, step))
    return [text[s : s + size] for s in starts]


def normalize(text: str) -> str:
    """Normalized copy of ``text`` for checking (never shown to anyone)."""
    text = unicodedata.normalize("NFKC", scrub(text))
    text = INVISIBLE.sub("", text)
    if any(ch in _HOMOGLYPH_KEYS for ch in text) and _is_latin_context(text):
        # Fold word by word: only words that mix Latin with look-alikes.
        text = re.sub(r"\w+", _fold_word, text)
    text = _SPACED.sub(_join_spaced, text)
    return collapse_whitespace(text)


def _fold_word(m: re.Match[str]) -> str:
    word = m.group(0)
    if any(ch.isascii() and ch.isalpha() for ch in word) or all(ch in _HOMOGLYPH_KEYS for ch in word if ch.isalpha()):
        return word.translate(_HOMOGLYPHS)
    return word
