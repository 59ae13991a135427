"""Text normalization before checks: NFKC, zero-width removal, homoglyph folding.

Checks look at the normalized text so that ``ｉｇｎｏｒｅ``, ``ig\u200bnore`` or a
Cyrillic ``іgnоre`` read as ``ignore``. Redactions are computed on the original
text, so only checks that never redact (injection, topics, toxicity) use it.
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


def truncate_for_checks(text: str, max_chars: int) -> str:
    """Head and tail of a very long text (an attack hides at either end)."""
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    half = max_chars // 2
    return text[:half] + "\n…\n" + text[-half:]


def normalize(text: str, *, max_chars: int = 0) -> str:
    """Normalized copy of ``text`` for checking (never shown to anyone)."""
    text = truncate_for_checks(text, max_chars)
    text = unicodedata.normalize("NFKC", text)
    text = INVISIBLE.sub("", text)
    if any(ch in _HOMOGLYPH_KEYS for ch in text) and _is_latin_context(text):
        # Fold word by word: only words that mix Latin with look-alikes.
        text = re.sub(r"\w+", _fold_word, text)
    return _SPACES.sub(" ", text)


def _fold_word(m: re.Match[str]) -> str:
    word = m.group(0)
    if any(ch.isascii() and ch.isalpha() for ch in word) or all(ch in _HOMOGLYPH_KEYS for ch in word if ch.isalpha()):
        return word.translate(_HOMOGLYPHS)
    return word
