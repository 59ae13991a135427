"""Rule families for prompt injection and jailbreaks, and the decoders that
uncover encoded payloads (base64, hex, rot13, leetspeak) before re-checking."""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from dataclasses import dataclass

from carafe.guards.checks.injection_i18n import match_i18n

_F = re.IGNORECASE | re.DOTALL

_OBJ = (
    r"(instructions?|prompts?|rules?|directions?|directives?|guidelines?|constraints?|programming|guardrails?|"
    r"polic(y|ies)|training(?!\s+(reminders?|courses?|sessions?|modules?|e-?mails?|materials?|budget|days?))|context|orders|commands?|restrictions?|system\s*(message|prompt))"
)

FAMILIES: dict[str, list[re.Pattern[str]]] = {
    "instruction_override": [
        re.compile(
            r"\b(ignore|disregard|forget|override|neglect|skip|drop|abandon|pay\s+no\s+attention\s+to|do\s+not\s+follow|don'?t\s+follow)\b"
            r"[^.!?\n]{0,40}?\b(all|any|every|previous|prior|preceding|earlier|above|original|initial|your|the|these|those|my)\b"
            r"[^.!?\n]{0,25}?\b" + _OBJ + r"\b",
            _F,
        ),
        re.compile(r"\bignore\s+(the\s+)?(above|previous|preceding|foregoing)\b", _F),
        re.compile(r"\b(ignore|disregard|forget)\s+(everything|all)\b(?!\s+(the\s+)?(noise|outliers|else\s+i))", _F),
        re.compile(
            r"\b(new|updated|real|actual)\s+(instructions?|rules|system\s+(prompt|message)|policy|task|goal|persona)\s*(:|are\b|is\b)",
            _F,
        ),
        re.compile(
            r"\b(from\s+now\s+on|from\s+this\s+moment)\b[^.!?\n]{0,40}\b(you\s+(are|will|must|shall)|ignore|answer\s+as|respond\s+as)\b",
            _F,
        ),
        re.compile(
            r"\boverride\s+security\b|<\s*/?\s*(system|context|user)\s*>|={3,}\s*end\s+of|#{2,}\s*end\s+of|\[\s*(admin|system)\s+(command|message|override)\s*\]|\bsystem\s*override\b",
            _F,
        ),
        re.compile(
            r"\b(turn\s+off|disable|remove|switch\s+off|bypass|circumvent|override)\b[^.!?\n]{0,20}\b(guardrails?|content\s+filters?|safety\s+(rules|filters?|training)|filters?|restrictions)\b",
            _F,
        ),
        re.compile(
            r"\b(obey|follow)\s+(me|my\s+(commands|instructions|rules))\b[^.!?\n]{0,30}\b(above|instead|over|from\s+now)",
            _F,
        ),
        re.compile(
            r"\b(safety|content)\s+(rules|policy|policies)\b[^.!?\n]{0,30}\b(don'?t|do\s+not|no\s+longer)\s+apply\b", _F
        ),
    ],
    "roleplay_jailbreak": [
        re.compile(
            r"\b(?i:you\s+are|you'?re|act\s+as|enable|enter|switch\s+to|activate|respond\s+as|answer\s+as|now\s+in|be)\s+(?i:now\s+)?(?i:in\s+)?(DAN|STAN|AIM|(?i:do\s+anything\s+now|developer\s+mode|god\s+mode|maintenance\s+mode|unrestricted\s+mode|a\s+jailbroken|jailbroken))\b",
            re.DOTALL,
        ),
        re.compile(
            r"\b(DAN|STAN)\b[^.!?\n]{0,40}\b(?i:no\s+rules|never\s+refuses?|anything)\b|\b(?i:jailbroken\s+(version|ai|model|assistant)|let'?s\s+do\s+a\s+jailbreak)\b",
            re.DOTALL,
        ),
        re.compile(
            r"\b(simulate|pretend\s+to\s+be|act\s+as)\s+(a\s+)?(linux\s+)?(terminal|shell|linux\s+machine|database)\b",
            _F,
        ),
        re.compile(
            r"\b(no|without|zero|free\s+of|unbound\s+by|not\s+bound\s+by|broken\s+free\s+of)\s+(any\s+|all\s+)?(ethical\s+)?(restrictions?|limits|rules|filters?|censorship|guidelines|polic(y|ies)|constraints|ethics|safety\s+filters?)\b",
            _F,
        ),
        re.compile(r"\b(unfiltered|uncensored|unrestricted)\s+(ai|assistant|model|llm|mode|chatbot)\b", _F),
        re.compile(
            r"\b(break|ignores?|ignoring|bypass)\s+(all\s+(of\s+)?|your\s+)(own\s+)?(rules|restrictions|guidelines|filters?|safety\s+training)\b",
            _F,
        ),
        re.compile(r"\b(stay|remain)\s+in\s+character\b[^.!?\n]{0,60}\b(no\s+matter|never|whatever|rules)", _F),
        re.compile(
            r"\b(pretend|imagine|act\s+as|act\s+like|roleplay|role-play)\b[^.!?\n]{0,60}\b(evil|no\s+(ethical|rules|restrictions|filters?)|without\s+(any\s+)?(rules|restrictions|filters?|safety)|admin(istrator)?\s+rights|root|hacker)\b",
            _F,
        ),
        re.compile(
            r"\b(grand(mother|ma)|deceased|late)\b[^.!?\n]{0,80}\b(salar(y|ies)|confidential|passwords?|secret|keys?)\b",
            _F,
        ),
    ],
    "prompt_exfiltration": [
        re.compile(
            r"\b(reveal|show|print|repeat|output|tell|give|display|leak|dump|quote|disclose|paste|translate|summari[sz]e|spell\s+out|share|list)\b"
            r"[^.!?\n]{0,40}?\b(system\s*(prompt|message|instructions)|initial\s+(prompt|instructions)|hidden\s+(prompt|instructions|preamble|configuration)|secret\s+(instructions|prompt|system\s+message)|"
            r"your\s+(original\s+|exact\s+|complete\s+)?(instructions|prompt|configuration|rules\s+you\s+must)|confidential\s+instructions)\b",
            _F,
        ),
        re.compile(
            r"\b(your|its|the)\s+(hidden|secret|confidential|initial)\s+(system\s+)?(prompt|instructions|preamble|system\s+message)\b",
            _F,
        ),
        re.compile(
            r"\b(words|lines|characters|sentences)\s+of\s+your\s+(instructions|prompt|system\s+message)\b|\bexfiltrat",
            _F,
        ),
        re.compile(
            r"\b(repeat|print|output|echo|return)\b[^.!?\n]{0,30}\b(everything|all(\s+of)?\s+the\s+(words|text)|the\s+(words|text))\s+(above|before)\b",
            _F,
        ),
        re.compile(
            r"\b(instructions|prompt|configuration)\b[^.!?\n]{0,30}\b(before\s+(this\s+conversation|my\s+message)|at\s+the\s+top\s+of\s+this\s+chat)\b",
            _F,
        ),
        re.compile(
            r"\b(dump|print|output|return)\b[^.!?\n]{0,30}\b(context\s+window|your\s+context|every\s+passage|all\s+passages|retrieved\s+passages)\b",
            _F,
        ),
        re.compile(
            r"\b(api\s+keys?|passwords?|tokens?|secrets?|environment\s+variables)\b[^.!?\n]{0,30}\b(you\s+have|stored\s+in\s+your|the\s+gateway\s+uses|configured\s+for\s+this)",
            _F,
        ),
        re.compile(r"\bmy\s+system\s+prompt\s+is\b|\bhere\s+is\s+the\s+system\s+prompt\b", _F),
        re.compile(
            r"\b(system\s+prompt|instructions?)\s+you\s+(were|have\s+been)\s+given\b|\b(told|instructed|asked)\s+you\s+not\s+to\s+(tell|share|say|reveal|show)\b|"
            r"\b(you\s+are|you'?re)\s+not\s+(supposed|allowed|permitted)\s+to\s+(show|tell|share|reveal|give)\b",
            _F,
        ),
        re.compile(
            r"\b(first|last|opening|next)\s+(sentences?|lines?|words?|paragraphs?)\s+(of|in)\s+your\s+(system\s+)?(prompt|instructions|message)\b|"
            r"\b(what\s+you\s+(can\s+)?see|everything|the\s+text|the\s+lines?)\s+(written\s+)?above\s+this\s+(message|line)\b",
            _F,
        ),
    ],
    "cross_tenant_access": [
        re.compile(
            r"\b(other|another|all\s+other|every(one'?s)?|other\s+people'?s?|my\s+colleagues?'?|my\s+coworkers?'?|other\s+teams?'?)\s*('s|s')?\s+"
            r"(users?'?|employees?'?|people'?s?|groups?'?|departments?'?|teams?'?)?\s*('s|s')?\s*"
            r"(documents?|files?|records?|data|emails?|salar(y|ies)|chats?|conversations?|questions|notes|folders?|hr\s+(files|records)|performance\s+reviews?|home\s+addresses|confidential)\b",
            _F,
        ),
        re.compile(
            r"\b(bypass|ignore|forget|disable|skip|without)\b[^.!?\n]{0,20}\b(acls?|access\s+controls?|permission\s+filters?|permissions?|access\s+rules|clearance)\b",
            _F,
        ),
        re.compile(
            r"\b(even\s+though|although|regardless|ignore\s+that|doesn'?t\s+matter)\b[^.!?\n]{0,40}\b(not\s+(a\s+member|in\s+(the|their|that)\s+\w+\s+group|allowed|authori[sz]ed)|who\s+i\s+am|my\s+groups?|permissions?)",
            _F,
        ),
        re.compile(
            r"\b(my\s+groups?|who\s+i\s+am|my\s+permissions?)\s+(don'?t|doesn'?t|do\s+not|does\s+not)\s+matter\b", _F
        ),
        re.compile(
            r"\b(ignoring|regardless\s+of|disregarding)\s+(who\s+i\s+am|my\s+(groups?|permissions?|role|access))\b|"
            r"\b(access\s+controls?|acls?|permissions?|permission\s+filters?)\s+(is|are)\s+(now\s+)?(disabled|off|turned\s+off|lifted|gone)\b",
            _F,
        ),
        re.compile(
            r"\b(of|from|belonging\s+to|by)\s+(all\s+)?(other|another)\s+(users?|employees?|people|groups?|departments?|teams?|customers?)\b|\bother\s+(users|people|employees)\s+(asked|uploaded|stored|have\s+(asked|uploaded|stored))\b",
            _F,
        ),
        re.compile(
            r"\b(not\s+allowed\s+to\s+see|i'?m\s+not\s+supposed\s+to|restricted\s+to\s+the|groups?\s+i\s+(don'?t|do\s+not)\s+belong\s+to|pretend\s+i\s+am\s+in)\b",
            _F,
        ),
        re.compile(
            r"(?<!can )(?<!could )(?<!would )(?<!to )\b(grant|give|elevate)\s+(me|my)\s+"
            r"(admin|root|full|elevated)?\s*(access|permissions|rights|privileges)\b",
            _F,
        ),
        re.compile(r"\b(assume|with)\s+(root|admin)\s+(privileges|rights)\b|\bclearance\s+level\s+set\b", _F),
    ],
}

_B64 = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{16,}={0,2}(?![A-Za-z0-9+/])")
_HEX = re.compile(r"\b(?:[0-9a-fA-F]{2}){8,}\b")
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})


@dataclass(frozen=True)
class RuleHit:
    family: str
    via: str  # "plain", "base64", "hex", "rot13", "leet"
    language: str = "en"


def _printable(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text or sum(ch.isprintable() or ch.isspace() for ch in text) < 0.95 * len(text):
        return None
    return text


def decoded_payloads(text: str) -> list[tuple[str, str]]:
    """(how, decoded text) for every encoded-looking run that decodes to text."""
    out: list[tuple[str, str]] = []
    for m in _B64.finditer(text):
        blob = m.group(0)
        try:
            raw = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
        except (binascii.Error, ValueError):
            continue
        if (dec := _printable(raw)) is not None:
            out.append(("base64", dec))
    for m in _HEX.finditer(text):
        if (dec := _printable(bytes.fromhex(m.group(0)))) is not None:
            out.append(("hex", dec))
    out.append(("rot13", codecs.encode(text, "rot13")))
    if _mostly_leet(text):
        out.append(("leet", text.translate(_LEET)))
    return out


_WORD = re.compile(r"[\w@$]{3,}")
_DIGIT_OR_SIGN = re.compile(r"[0-9@$]")


def _mostly_leet(text: str) -> bool:
    """Leetspeak writes most words with digits; an ordinary text has a few (MP3, v2, 5G)."""
    if not _DIGIT_OR_SIGN.search(text):
        return False
    words = _WORD.findall(text)
    leet = sum(1 for w in words if _DIGIT_OR_SIGN.search(w) and not w.isdigit() and any(c.isalpha() for c in w))
    return leet >= 2 and leet >= 0.25 * len(words)


_ENGLISH = re.compile(r"\b(the|and|you|your|all|to|of|is|are|me|my|now)\b", re.IGNORECASE)


def _match(text: str, via: str) -> RuleHit | None:
    for family, patterns in FAMILIES.items():
        if any(p.search(text) for p in patterns):
            return RuleHit(family, via)
    found = match_i18n(text) if via == "plain" else None  # encoded payloads are English in practice
    return RuleHit(found[0], via, found[1]) if found else None


def _worth_decoding(how: str, original: str, decoded: str) -> bool:
    """rot13 of ordinary text is gibberish: check that view only when it reads more like English."""
    if how != "rot13":
        return True
    return len(_ENGLISH.findall(decoded)) > len(_ENGLISH.findall(original))


def match_rules(text: str) -> RuleHit | None:
    """The first rule family that matches ``text`` (already normalized), in English or
    another covered language, plain or decoded."""
    hit = _match(text, "plain")
    for how, decoded in [] if hit else decoded_payloads(text):
        if _worth_decoding(how, text, decoded) and (hit := _match(decoded, how)) is not None:
            break
    return hit
