"""Data that crosses to and from the 2026 InstructLab path: sdg_hub flows and training_hub.

A team with a GPU teacher may generate with sdg_hub elsewhere and tune and serve here, or
generate here and train with training_hub. sdg_hub's knowledge flows (``key_facts``,
``extractive_summary``, ``detailed_summary``, ``rephrase_doc``) write one JSON row per
generated pair, with ``question`` and ``response`` columns beside ``document`` (the summary or
key fact the pair came from), ``raw_document`` and ``document_outline``; its mixing step turns
rows into ``{"messages": [...], "metadata": "<json>"}``, which is what training_hub's ``sft``
reads. Both shapes are accepted here; Carafe's own data is exported in the second.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from carafe.tuning.errors import RecipeInvalid

_MARKERS = re.compile(r"\[(?:END|ANSWER|QUESTION)\]")
_ROLES = {"system", "user", "assistant"}


def _messages(row: dict[str, Any], where: str) -> list[dict[str, str]]:
    msgs = row["messages"]
    if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
        raise RecipeInvalid(f"{where}: `messages` must be a non-empty list of {{role, content}} objects")
    out = []
    for m in msgs:
        if m.get("role") not in _ROLES or not isinstance(m.get("content"), str):
            raise RecipeInvalid(f"{where}: a message needs role system/user/assistant and a string content, got {m}")
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "assistant":
        raise RecipeInvalid(f"{where}: the last message must be the assistant's (it is what is learned)")
    return out


def _from_flow_row(row: dict[str, Any], with_document: bool) -> list[dict[str, str]]:
    """A knowledge-flow row as a chat: the document before the question (sdg_hub's mixing layout)."""
    question = _MARKERS.sub("", str(row["question"])).strip()
    answer = _MARKERS.sub("", str(row["response"])).strip()
    if with_document and row.get("document"):
        outline = str(row.get("document_outline") or "").strip()
        question = f"{outline}\n{str(row['document']).strip()}\n\n{question}".lstrip()
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def read_external(path: Path, *, phase: str = "knowledge", with_document: bool = True) -> list[dict[str, Any]]:
    """Training samples from an sdg_hub flow's JSONL (question/response rows) or a messages JSONL."""
    samples: list[dict[str, Any]] = []
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RecipeInvalid(f"{where}: not a JSON line ({exc.msg})") from None
        if not isinstance(row, dict):
            raise RecipeInvalid(f"{where}: each line must be a JSON object")
        if "messages" in row:
            messages, stage = _messages(row, where), "messages"
        elif "question" in row and "response" in row:
            messages, stage = _from_flow_row(row, with_document), "sdg_hub"
        else:
            raise RecipeInvalid(
                f"{where}: neither `messages` (training_hub / sdg_hub mixed data) nor `question` + `response` "
                f"(an sdg_hub flow's output) in the keys {sorted(row)[:8]}"
            )
        if not messages[-1]["content"]:
            raise RecipeInvalid(f"{where}: the answer is empty")
        prov = {"stage": stage, "source": path.name, "source_sha256": digest, "line": n}
        samples.append({"messages": messages, "phase": row.get("phase", phase), "provenance": prov})
    if not samples:
        raise RecipeInvalid(f"{path} holds no samples")
    return samples


def export_training_hub(samples: list[dict[str, Any]], path: Path) -> int:
    """Write samples as training_hub reads them: ``messages`` plus a JSON-string ``metadata``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps(
            {
                "messages": [{"role": m["role"], "content": m["content"]} for m in s["messages"]],
                "metadata": json.dumps({"dataset": "carafe", "phase": s.get("phase"), **s.get("provenance", {})}),
            }
        )
        for s in samples
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)
