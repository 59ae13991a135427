"""RAFT-style samples: the question with gold and distractor passages, in the gateway's prompt format.

The system prompt comes from :func:`carafe.indexer.prompt.rag_system_prompt`, the very
function the gateway uses at serving time, so the adapter learns the format it will see.
"""

from __future__ import annotations

import random

from carafe.tuning.filters import Candidate

NO_ANSWER = "The provided passages do not contain the answer to this question."


def raft_available() -> bool:
    try:
        import carafe.indexer.prompt  # noqa: F401
    except ImportError:
        return False
    return True


def raft_messages(
    cand: Candidate, chunks: dict[str, str], rng: random.Random, *, distractors: int, no_answer: bool, title: str
) -> list[dict[str, str]]:
    """Messages with numbered passages: the gold chunk (unless `no_answer`) among distractors."""
    from carafe.indexer.prompt import Passage, rag_system_prompt

    others = [cid for cid in chunks if cid != cand.chunk]
    picked = rng.sample(others, min(distractors + (1 if no_answer else 0), len(others)))
    ids = picked if no_answer else [*picked, cand.chunk or ""]
    rng.shuffle(ids)
    passages = [
        Passage(
            doc_id=cid.split("#")[0], title=title, version="1", chunk=int(cid.rsplit("#", 1)[-1] or 0), text=chunks[cid]
        )
        for cid in ids
    ]
    answer = NO_ANSWER if no_answer else f"{cand.answer} [{ids.index(cand.chunk or '') + 1}]"
    return [
        {"role": "system", "content": rag_system_prompt(passages, None)},
        {"role": "user", "content": cand.question},
        {"role": "assistant", "content": answer},
    ]
