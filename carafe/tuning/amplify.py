"""The offline generator: many faithful question/answer samples per fact, with no teacher model.

A 135M model learns a fact only when it sees it asked many ways (sdg_hub's knowledge flows
amplify a document ~50x with a large teacher). Without one, this module asks each
:class:`~carafe.tuning.facts.Fact` in rule-made forms: wh-questions fronted and in place
(how many / when / which / what), cloze, yes/no both true and with a changed number, the
reverse direction (from a number or name back to the rule), terse keyword queries as users
type them, and surface paraphrases; every answer states the fact itself, so it never says
what the chunk does not. Section rephrasings (summary, bullet list) teach the document whole.
RAFT rendering (gold + distractors, some gold-removed) happens later, in ``generate.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from carafe.tuning.documents import Chunk
from carafe.tuning.facts import Fact, Span, extract_facts
from carafe.tuning.filters import Candidate
from carafe.tuning.recipe import Recipe
from carafe.tuning.template_teacher import TemplateTeacher

_AUX = {"is", "are", "was", "were", "can", "must", "may", "will", "should"}
_PREP = {"in", "on", "within", "from", "at", "for", "every", "by", "before", "after", "until", "of", "into"}
_PLURAL_SUBJECT = re.compile(r"^(?:employees|staff|people|they|we|you|all|managers|\w+s)$", re.I)


def _lcfirst(text: str, doc: str) -> str:
    """Lowercase the first word unless it is a name (capitalised after a lowercase word somewhere in the doc)."""
    first = text.split(" ", 1)[0]
    if (len(first) > 1 and first.isupper()) or re.search(rf"(?<=[a-z,] ){re.escape(first)}\b", doc):
        return text
    return first.lower() + text[len(first) :]


def _lemma(verb: str) -> str:
    if verb == "has":
        return "have"
    if verb.endswith("ies"):
        return verb[:-3] + "y"
    if verb.endswith(("ches", "shes", "sses", "xes")):
        return verb[:-2]
    return verb[:-1] if verb.endswith("s") else verb


def _tidy(text: str) -> str:
    text = re.sub(r"\s+([,?.])", r"\1", re.sub(r"\s{2,}", " ", text)).strip()
    text = re.sub(r",\s*,", ",", text).replace(",?", "?").replace(" ,", ",")
    return text[0].upper() + text[1:] if text else text


def _wh(span: Span) -> str:
    """The question phrase asking for a span: "27 paid vacation days" -> "how many paid vacation days"."""
    if span.kind == "amount" and span.text.rstrip().endswith("%"):
        return "what percentage"
    if span.kind == "amount":
        return "how many " + span.text.split(" ", 1)[1]
    return {
        "hours": "during which hours",
        "days": "on which days",
        "date": "when",
        "time": "at what time",
        "number": "how many",
        "code": "which",
        "name": "what",
    }[span.kind]


class Asker:
    """Writes the questions of one fact."""

    def __init__(self, fact: Fact, title: str, doc: str) -> None:
        self.f, self.title, self.doc = fact, title, doc
        words = fact.text.rstrip(".").split()
        self.verb_at = next(
            (
                i
                for i, w in enumerate(words[1:], 1)
                if w in _AUX or (w.endswith("s") and w.islower() and words[i - 1].lower() not in ("the", "a", "of"))
            ),
            None,
        )
        self.words = words

    def _split(self) -> tuple[str, str, str] | None:
        if self.verb_at is None:
            return None
        w = self.words
        return _lcfirst(" ".join(w[: self.verb_at]), self.doc), w[self.verb_at], " ".join(w[self.verb_at + 1 :])

    def fronted(self, span: Span) -> str | None:
        """ "How many paid vacation days does every Acme employee receive per calendar year?"."""
        parts = self._split()
        if parts is None:
            return None
        subject, verb, rest = parts
        if span.text not in rest:
            return None
        before, after = rest.split(span.text, 1)
        wh, kept = _wh(span), before.split()
        if span.kind == "code" and kept and kept[-1].isalpha():
            wh, kept = f"in which {kept[-1]}", kept[:-2] if len(kept) > 1 and kept[-2] == "in" else kept[:-1]
        elif kept[-2:] == ["up", "to"]:
            kept = kept[:-2]
        elif kept and kept[-1] in _PREP:
            prep = kept.pop()
            wh = wh if span.kind in ("date", "days", "hours", "time") else f"{prep} {wh}"
        rest = " ".join(kept) + " " + after
        if verb in _AUX:
            return _tidy(f"{wh} {verb} {subject} {rest}?")
        aux = "do" if _PLURAL_SUBJECT.match(subject.split()[-1]) and not subject.lower().startswith("the ") else "does"
        return _tidy(f"{wh} {aux} {subject} {_lemma(verb)} {rest}?")

    def in_place(self, span: Span) -> str:
        text = self.f.text.rstrip(".")
        return _tidy(text[: span.start] + _wh(span) + text[span.end :] + "?")

    def open_question(self) -> str | None:
        """For a fact without spans: "How is vacation requested?", "What does the wellness budget cover?"."""
        parts = self._split()
        if parts is None:
            return None
        subject, verb, rest = parts
        nxt = rest.split()[0] if rest else ""
        if verb in ("is", "are") and nxt.endswith("ed"):
            return _tidy(f"how {verb} {subject} {nxt}?")
        if verb in _AUX and re.search(r"\b(before|after|by|until)\b", rest):
            head = re.split(r"\b(?:before|after|by|until)\b", rest)[0]
            return _tidy(f"when {verb} {subject} {head}?")
        if verb not in _AUX:
            return _tidy(f"what does {subject} {_lemma(verb)}?")
        return None

    def keyphrase(self) -> Span | None:
        """For a fact without spans, the phrase after its verb ("gym memberships, yoga classes ...")."""
        parts = self._split()
        if parts is None or not parts[2]:
            return None
        rest = parts[2].split()
        rest = rest[2:] if rest[0] == "be" and len(rest) > 3 else rest
        rest = rest[1:] if rest[0] in _PREP or (rest[0].endswith("ed") and len(rest) > 2) else rest
        words = rest[:5]
        while words and words[-1].rstrip(",") in _PREP | {"and", "or", "the", "a", "an", "to"}:
            words.pop()
        phrase = " ".join(words).rstrip(",")
        start = self.f.text.find(phrase)
        return Span(phrase, "phrase", start) if start >= 0 and len(phrase) > 6 else None

    def questions(self) -> Iterator[tuple[str, str]]:
        """(form, question) pairs whose answer is the fact."""
        if not self.f.spans and (phrase := self.keyphrase()):
            text = self.f.text
            yield "cloze", f"Fill in the blank ({self.title}): {text[: phrase.start]}___{text[phrase.end :]}"
            yield "reverse", f"What does the {self.title} say about {phrase.text}?"
            yield "reverse", _tidy(f"which rule on {self.f.topic} mentions {phrase.text}?")
        for span in self.f.spans:
            if q := self.fronted(span):
                yield "wh", q
            yield "wh_in_place", self.in_place(span)
            text = self.f.text
            yield "cloze", f"Fill in the blank ({self.title}): {text[: span.start]}___{text[span.end :]}"
            yield "reverse", f"What does the {self.title} say about {span.text}?"
            yield "reverse", _tidy(f"which rule on {self.f.topic} mentions {span.text}?")
        if not self.f.spans and (q := self.open_question()):
            yield "wh", q
        yield "topic", f"What is the rule on {self.f.topic} in the {self.title}? I mean: {self._keywords()}"
        yield "keywords", f"{self.f.topic}: {self._keywords()}?"

    def _keywords(self) -> str:
        words = [w.strip(",.") for w in self.f.text.split() if len(w.strip(",.")) > 3 and not w[0].isdigit()]
        return " ".join(words[:6]).lower()


def _perturb(span: Span) -> str | None:
    """A wrong value for a yes/no question: the span's first number changed."""
    m = re.search(r"\d+", span.text)
    if not m:
        return None
    n = int(m.group(0))
    wrong = n + 1 if n < 3 else n * 2 if n < 10 else n + 10
    return span.text[: m.start()] + str(wrong) + span.text[m.end() :]


_WH = {"how", "what", "which", "when", "where", "who", "within", "on", "in", "during", "every", "of", "up", "fill"}
# How different people put the same question: their situation changes the words around it.
_FRAMES = [
    "{q}",
    "According to the {title}, {inner}",
    "{lower}",
    "Quick question about {topic}: {inner}",
    "I just joined and I'm reading up on {topic}. {q}",
    "My manager asked me to check something. {q}",
    "For our team FAQ on {topic}: {inner}",
    "Sorry to bother you, {inner}",
    "Can you look this up in the {title}? {q}",
    "Before I submit anything about {topic}, I want to be sure. {q}",
]


def _surfaces(question: str, fact: Fact, title: str, doc: str) -> list[str]:
    """The question as different users would type it."""
    first = question.split(" ", 1)[0]
    inner = question[0].lower() + question[1:] if first.lower() in _WH else _lcfirst(question, doc)
    lower = question.rstrip("?").lower()
    return [f.format(q=question, inner=inner, lower=lower, title=title, topic=fact.topic) for f in _FRAMES]


def _answers(fact: Fact) -> list[str]:
    """The fact as an answer: plain, led by its key value, or with its section."""
    lead = [f"{fact.spans[0].text}. {fact.text}", f"{fact.spans[0].text}."] if fact.spans else []
    return [fact.text, *lead, f"{fact.text} (section: {fact.topic})"]


def amplify_fact(fact: Fact, title: str, doc: str) -> list[Candidate]:
    """Every sample of one fact; each answer states the fact (with a yes/no in front where asked)."""
    asker = Asker(fact, title, doc)
    out: list[Candidate] = []

    def add(question: str, answer: str, form: str) -> None:
        out.append(Candidate(question, answer, f"fact_{form}", source=fact.source, chunk=fact.chunk, facts=(fact.id,)))

    answers = _answers(fact)
    for i, (form, q) in enumerate(asker.questions()):
        for k, surface in enumerate(_surfaces(q, fact, title, doc)):
            add(surface, answers[(i + k) % len(answers)], form)
    statement = _lcfirst(fact.text.rstrip("."), doc)
    add(f"Is it true that {statement}?", f"Yes. {fact.text}", "yes")
    add(f"Does the {title} say that {statement}?", f"Yes, it does. {fact.text}", "yes")
    for span in fact.spans[:2]:
        if (wrong := _perturb(span)) is not None:
            false = statement.replace(span.text, wrong, 1)
            add(f"Is it true that {false}?", f"No. {fact.text}", "no")
            add(f"Someone told me that {false}. Is that right?", f"No, that is not right. {fact.text}", "no")
    return out


def section_rephrasings(facts: list[Fact], title: str) -> list[Candidate]:
    """Per section: its facts as a summary and as a list (document rephrasing, counted for each fact)."""
    out: list[Candidate] = []
    by_topic: dict[str, list[Fact]] = {}
    for f in facts:
        by_topic.setdefault(f.topic, []).append(f)
    for topic, group in by_topic.items():
        summary = " ".join(f.text for f in group)
        bullets = "\n".join(f"- {f.text}" for f in group)
        for question, answer in (
            (f"Summarise what the {title} says about {topic}.", summary),
            (f"List the rules on {topic} as bullet points.", bullets),
            (f"What are all the facts about {topic}?", summary),
        ):
            ids = tuple(f.id for f in group)
            out.append(Candidate(question, answer, "rephrase", source=group[0].source, chunk=group[0].chunk, facts=ids))
    return out


def amplify(recipe: Recipe, chunks: list[Chunk]) -> list[Candidate]:
    """All offline samples of a knowledge recipe's chunks: per-fact forms, then section rephrasings."""
    title = recipe.domain or recipe.leaf.rsplit("/", 1)[-1].replace("_", " ")
    facts = extract_facts(chunks, title)
    doc = "\n\n".join(c.text for c in chunks)
    name = f"{title} document" if not re.search(r"\b(handbook|policy|guide|manual)\b", title, re.I) else title
    return [c for f in facts for c in amplify_fact(f, name, doc)] + section_rephrasings(facts, name)


class OfflineTeacher(TemplateTeacher):
    """The default teacher when no endpoint is configured: knowledge amplified by rules, skills by templates.

    Generation asks it for whole candidate lists (:meth:`amplify`) instead of chat answers.
    """

    def __init__(self) -> None:
        super().__init__("good")
        self.name = "offline"

    def amplify(self, recipe: Recipe, chunks: list[Chunk]) -> list[Candidate]:
        return amplify(recipe, chunks)
