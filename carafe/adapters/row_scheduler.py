"""Continuous batching for the native fast path: one forward pass per step, rows of any kind.

Each request owns its KV (:class:`~carafe.adapters.kv_rows.RowKV`), so there is no
batch cache to pad, merge or trim. Every step is one native pass in which each decoding
row brings its last token and each row being prefilled brings the next piece of its
prompt, up to ``prefill_chunk`` prompt tokens per step in all: decoding streams get a
token every step while a long RAG prompt is taken in, and both share one read of the
weights. A request joins as soon as a row is free and leaves the moment it finishes.

Because a row's tokens depend only on its own earlier tokens (the native pass attends
each row to its own columns), a prompt gives the same tokens prefilled at once or in
chunks, alone or beside others, and from a prefix-cache hit (a snapshot of a recent
prompt that starts the same way, copied into the new row) or not.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from carafe.adapters.errors import EngineUnavailable
from carafe.adapters.kv_rows import RowKV
from carafe.adapters.request import BASE, Request
from carafe.adapters.sampling import sample_next
from carafe.adapters.scheduler import Scheduler

log = logging.getLogger("carafe.adapters.scheduler")
ANSWER_ROOM = 256  # answer tokens a new row has room for before its KV buffer grows


class RowScheduler(Scheduler):
    """The worker thread over a model with :meth:`forward_rows` (``row_kv``: the native decoder)."""

    def __init__(self, model: Any, config: Any, **kw: Any) -> None:
        # the base builds the prefix cache with align 1 (the model is split_exact): a hit may end anywhere
        super().__init__(model, config, **kw)
        self._prefilling: list[Request] = []  # rows still taking in their prompts

    def _in_flight(self) -> list[Request]:
        return [*self._rows, *self._prefilling]

    def stats(self) -> dict[str, int]:
        """The base counters, plus ``kv_bytes``: the KV buffers of the requests in flight."""
        return {**super().stats(), "kv_bytes": sum(r.kv.nbytes for r in self._in_flight() if r.kv is not None)}

    def _join(self) -> None:
        """Waiting requests take free rows, starting from a stored prefix of their prompt if one fits."""
        while self._waiting and len(self._rows) + len(self._prefilling) < self._max_batch:
            r = self._waiting.popleft()
            if r.cancelled or r.done:
                continue
            hit = self.prefixes.lookup(r.adapter, r.prompt_ids) if self.prefixes is not None else None
            # room for the prompt and the answer's first tokens, so that most rows never grow
            room = len(r.prompt_ids) + min(r.params.max_tokens, ANSWER_ROOM)
            if hit is not None:
                r.kv = RowKV.from_snapshot(hit.kv, hit.length, room)
                self.counters["prefix_hits"] += 1
                self.counters["prefix_tokens_reused"] += hit.length
            else:
                r.kv = self.model.new_row(room)
            self._prefilling.append(r)

    def _step(self) -> None:
        self._join()
        decoding = list(self._rows)
        pieces: list[tuple[Request, list[int]]] = []
        budget = self._chunk or None  # prompt tokens this pass (None: whole prompts)
        for r in self._prefilling:
            if budget is not None and budget <= 0:
                break
            start = r.kv.length
            end = len(r.prompt_ids) if budget is None else min(len(r.prompt_ids), start + budget)
            pieces.append((r, r.prompt_ids[start:end]))
            if budget is not None:
                budget -= end - start
        batch = [*decoding, *(r for r, _ in pieces)]
        if not batch:
            return
        tokens = [[r.last_token] for r in decoding] + [piece for _, piece in pieces]
        try:
            logits = self.model.forward_rows(tokens, [r.kv for r in batch], [r.adapter or BASE for r in batch])
        except Exception as exc:  # a failed pass fails the rows at fault, not the engine
            log.exception("engine step failed")
            batch, logits = self._alone(batch, tokens, exc)
            decoding = [r for r in decoding if r in batch]
            if not batch:
                return
        if decoding:
            self.counters["steps"] += 1
        if pieces:
            self.counters["prefill_chunks"] += 1
        ready = [i for i, r in enumerate(batch) if i < len(decoding) or r.kv.length == len(r.prompt_ids)]
        for r in batch[len(decoding) :]:
            if r.kv.length < len(r.prompt_ids):
                continue
            self.counters["prefills"] += 1
            self._prefilling.remove(r)
            self._rows.append(r)
            if self.prefixes is not None and self.prefixes.wants(r.prompt_ids):
                self.prefixes.store(r.adapter, r.prompt_ids, r.kv.snapshot(len(r.prompt_ids)))
        rows = [batch[i] for i in ready]
        self._accept(rows, sample_next(logits[ready], [r.sampler for r in rows]))

    def _alone(self, batch: list[Request], tokens: list[list[int]], exc: Exception) -> tuple[list[Request], Any]:
        """A pass failed: each row runs alone (a row's KV grows only when its pass succeeds, so a retry redoes
        the same columns). The rows that fail alone fail; the others go on with their logits from the retry."""
        if len(batch) == 1:
            self._fail(batch, EngineUnavailable(f"generation failed: {exc}"))
            return [], None
        kept: list[Request] = []
        logits = []
        for r, piece in zip(batch, tokens):
            try:
                logits.append(self.model.forward_rows([piece], [r.kv], [r.adapter or BASE]))
            except Exception as row_exc:
                log.warning("a row failed alone: %s", row_exc)
                r.fail(EngineUnavailable(f"generation failed: {row_exc}"))
                continue
            kept.append(r)
        return kept, torch.cat(logits) if logits else None

    def _clear_batch(self) -> None:
        for r in self._in_flight():
            r.kv = None
        self._rows, self._prefilling = [], []

    def _drop_done(self) -> None:
        """Finished and cancelled rows leave at once; their KV goes with them."""
        for r in self._in_flight():
            if r.cancelled and not r.done:
                r.done = True
                self.counters["requests_cancelled"] += 1
            if r.done:
                r.kv = None
        self._rows = [r for r in self._rows if not r.done]
        self._prefilling = [r for r in self._prefilling if not r.done]
