"""A rule-based stand-in teacher: deterministic answers built from the prompt's own material.

No large teacher runs on this machine, so tests, the bench and offline demos use this one,
directly (`teacher.endpoint: template`) or behind a real OpenAI-compatible HTTP server
(:func:`teacher_app`). It reads the task from the prompt and answers in the asked format:
knowledge pairs from the chunk's sentences and the seed questions, skill requests from a
topic list, responses in the voice of the examples (same greeting and sign-off), and judge
scores from word overlap with the source.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Literal

from carafe.tuning.prompts import Messages

_QUESTION_FORMS = [
    "What does the handbook say about {t}?",
    "What should I know about {t}?",
    "Can you explain the rules on {t}?",
    "Tell me about {t}.",
    "I have a question about {t}. What applies?",
    "What are the facts on {t}?",
]
_PARAPHRASES = ["{q}", "Quick question: {q}", "Could you tell me: {q}", "I was wondering, {q}"]
_TOPICS = [
    "request a parking spot",
    "change my bank account",
    "enrol in the pension plan",
    "report sick leave",
    "book a training course",
    "change my working hours",
    "get a new laptop",
    "claim travel expenses",
    "take a sabbatical",
    "register a side job",
    "update my emergency contact",
    "get a company phone",
    "take a day off for moving house",
    "see my remaining leave",
    "attend a conference",
    "bring my dog to the office",
]
_REQUEST_FORMS = ["How do I {x}?", "Can I {x}?", "Who can help me {x}?", "What is the process to {x}?"]
# Questions about things rather than actions, as a real teacher would also vary them.
_THINGS = [
    "the next payroll date",
    "the summer party",
    "the canteen menu",
    "my performance review",
    "the office opening hours",
    "the holiday calendar",
    "the new pension rules",
    "the bike lease offer",
]
_THING_FORMS = ["When is {y}?", "Where can I find {y}?", "What about {y}?", "Is there news on {y}?"]
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9:.-]*")


def _between(text: str, tag: str) -> str:
    m = re.search(rf"<{tag}>\n?(.*?)\n?</{tag}>", text, re.S)
    return m.group(1).strip() if m else ""


def _pick(seq: list[str], key: str, i: int = 0) -> str:
    h = int(hashlib.sha256(f"{key}/{i}".encode()).hexdigest(), 16)
    return seq[h % len(seq)]


def _words(text: str) -> set[str]:
    return {w.lower().strip(".:") for w in _WORD.findall(text) if len(w) > 3}


def _examples(block: str) -> list[tuple[str, str]]:
    return re.findall(r"Question: (.*?)\nAnswer: (.*?)(?=\n\n(?:Context: |Question: )|\Z)", block, re.S)


def _knowledge_pairs(user: str) -> list[dict[str, str]]:
    chunk, examples = _between(user, "chunk"), _examples(_between(user, "examples"))
    n = int((re.search(r"Write (\d+) new pairs", user) or [0, 6])[1])
    pairs: list[dict[str, str]] = []
    topic = "this policy"
    for para in chunk.split("\n\n"):
        if para.startswith("#"):
            topic = para.lstrip("# ").strip().lower()
            continue
        for i, sentence in enumerate(s.strip() for s in re.split(r"(?<=[.!?])\s+", para) if s.strip()):
            pairs.append({"question": _QUESTION_FORMS[i % len(_QUESTION_FORMS)].format(t=topic), "answer": sentence})
        pairs.append({"question": f"Summarise the section on {topic}.", "answer": para})
    chunk_words = _words(chunk)
    for q, a in examples:  # seed questions whose answer this chunk supports, paraphrased
        if len(_words(a) & chunk_words) >= max(2, len(_words(a)) // 2):
            pairs += [
                {"question": form.format(q=q[0].lower() + q[1:]) if form != "{q}" else q, "answer": a.strip()}
                for form in _PARAPHRASES[1:]
            ]
    return pairs[: max(n, 1) * 2]


def _requests(user: str, n: int) -> list[str]:
    out = []
    for i in range(n):
        if i % 3 == 2:
            out.append(_pick(_THING_FORMS, user, i).format(y=_pick(_THINGS, user, i + 100)))
        else:
            out.append(_pick(_REQUEST_FORMS, user, i).format(x=_pick(_TOPICS, user, i + 100)))
    return out


def _response(system: str, instruction: str) -> str:
    examples = _examples(_between(system, "examples"))
    if not examples:
        return f"Here is my answer to: {instruction}"
    answer = examples[0][1].strip()
    lines = answer.splitlines()
    greeting = answer.split(",", 1)[0] + "," if "," in lines[0][:40] else ""
    signoff = lines[-1] if len(lines) > 1 else ""
    action = re.match(r"^(?:How do I|Can I|Who can help me|What is the process to) (.*)", instruction.rstrip("?."))
    if action:
        body = (
            f"thank you for your question about how to {action[1]}. This is arranged through the HR portal, "
            "where you will find the form and the people to contact. Please reach out if anything is unclear."
        )
    else:
        thing = re.sub(r"^(?:When is|Where can I find|What about|Is there news on) ", "", instruction.rstrip("?."))
        body = (
            f"thank you for asking about {thing}. You will find the current details in the HR portal, "
            "and we announce any change by email. Please reach out if anything is unclear."
        )
    return "\n".join(x for x in (f"{greeting} {body}".strip(), signoff) if x)


def _judge(user: str) -> dict[str, int]:
    source = _between(user, "source")
    answer = user.rsplit("Answer:", 1)[-1]
    if not source:
        return {"faithfulness": 5, "relevance": 4, "quality": 4}
    overlap = len(_words(answer) & _words(source)) / max(len(_words(answer)), 1)
    return {"faithfulness": 5 if overlap >= 0.6 else 2, "relevance": 4, "quality": 4}


class TemplateTeacher:
    """Implements the Teacher protocol without a model. ``mode='junk'`` answers nonsense."""

    def __init__(self, mode: Literal["good", "junk"] = "good") -> None:
        self.mode = mode
        self.name = "template" if mode == "good" else "template-junk"

    def answer(self, messages: Messages) -> str:
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        user = messages[-1]["content"]
        if self.mode == "junk":
            return "Sure! Here you go: lorem ipsum dolor sit amet"
        task = (re.match(r"Task: (\w+)", system) or [None, "chat"])[1]
        n = int((re.search(r"Write (\d+) new", user) or [0, 5])[1])
        if task == "knowledge_qa":
            return json.dumps(_knowledge_pairs(user))
        if task == "skill_instructions":
            return json.dumps(_requests(user, n))
        if task == "grounded_contexts":
            return json.dumps(
                [
                    f"Note {i + 1}: " + _pick([c for c in re.findall(r"Context: (.*)", user)] or ["none"], user, i)
                    for i in range(n)
                ]
            )
        if task == "skill_response":
            return _response(system, user)
        if task == "judge":
            return json.dumps(_judge(user))
        return "I am a template teacher."

    async def complete(self, messages: Messages) -> str:
        return self.answer(messages)


def teacher_app(mode: Literal["good", "junk"] = "good"):
    """A minimal OpenAI-compatible server (`POST /v1/chat/completions`) around TemplateTeacher."""
    from fastapi import FastAPI

    app = FastAPI()
    teacher = TemplateTeacher(mode)
    app.state.calls = 0

    @app.post("/v1/chat/completions")
    async def chat(body: dict) -> dict:
        app.state.calls += 1
        text = teacher.answer(body["messages"])
        return {
            "id": f"chatcmpl-{app.state.calls}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "t"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }

    return app
