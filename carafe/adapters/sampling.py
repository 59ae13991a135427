"""Choosing the next token for every row of a batch from one logits tensor.

Logits processing is vectorised across rows (temperature, top-k, top-p, min-p);
penalties touch only the rows that ask for them. The final draw uses each request's
own ``torch.Generator``, so a seeded request samples the same tokens whether it runs
alone or shares the batch with others.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from carafe.adapters.engine import SamplingParams
from carafe.adapters.errors import EngineUnavailable
from carafe.errors import CarafeError, InvalidInput

log = logging.getLogger("carafe.adapters.sampling")

_NEG_INF = float("-inf")


@dataclass(slots=True)
class RowSampler:
    """One request's sampling state: its params, generator and token history."""

    params: SamplingParams
    prompt_ids: list[int]
    eos_ids: frozenset[int]
    device: torch.device | str = "cpu"
    output_ids: list[int] = field(default_factory=list)
    # (output_ids, logits row) -> None, masks the row in place (constrained decoding)
    logits_processor: Callable[[list[int], torch.Tensor], None] | None = None
    # per sampled token, when params.logprobs is set: (token, logprob, [(token, logprob)] top)
    logprob_steps: list[tuple[int, float, list[tuple[int, float]]]] = field(default_factory=list)
    generator: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.generator = torch.Generator(device=self.device)
        seed = self.params.seed if self.params.seed is not None else secrets.randbits(63)
        self.generator.manual_seed(int(seed) & ((1 << 63) - 1))

    @property
    def banned_now(self) -> list[int]:
        """Tokens that may not end the output yet (EOS and stop tokens before ``min_tokens``)."""
        if len(self.output_ids) >= self.params.min_tokens:
            return []
        return list(self.params.stop_token_ids) + ([] if self.params.ignore_eos else list(self.eos_ids))

    def is_stop_token(self, token: int) -> bool:
        return (token in self.eos_ids and not self.params.ignore_eos) or token in self.params.stop_token_ids


def _apply_penalties(row: torch.Tensor, s: RowSampler) -> None:
    p = s.params
    if p.repetition_penalty != 1.0:  # vLLM: over prompt and output tokens
        seen = torch.tensor(sorted(set(s.prompt_ids) | set(s.output_ids)), dtype=torch.long, device=row.device)
        vals = row[seen]
        row[seen] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
    if (p.presence_penalty or p.frequency_penalty) and s.output_ids:  # over output tokens only
        out = torch.tensor(s.output_ids, dtype=torch.long, device=row.device)
        counts = torch.bincount(out, minlength=row.shape[-1]).to(row.dtype)
        row -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(row.dtype)


def _filter(logits: torch.Tensor, samplers: list[RowSampler]) -> torch.Tensor:
    """Top-k / top-p / min-p masks, vectorised over the rows (logits already tempered)."""
    dev = logits.device
    top_k = [s.params.top_k for s in samplers]
    top_p = [s.params.top_p for s in samplers]
    min_p = [s.params.min_p for s in samplers]
    vocab = logits.shape[-1]
    if any(0 < k < vocab for k in top_k) or any(p < 1.0 for p in top_p):
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        ks = torch.tensor([k if 0 < k < vocab else vocab for k in top_k], device=dev).unsqueeze(1)
        ranks = torch.arange(vocab, device=dev).unsqueeze(0)
        sorted_logits = sorted_logits.masked_fill(ranks >= ks, _NEG_INF)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass strictly before each token: the first always stays
        ps = torch.tensor(top_p, device=dev, dtype=probs.dtype).unsqueeze(1)
        sorted_logits = sorted_logits.masked_fill(before >= ps, _NEG_INF)
        logits = torch.full_like(logits, _NEG_INF).scatter(-1, order, sorted_logits)
    if any(m > 0 for m in min_p):
        probs = logits.softmax(dim=-1)
        floor = torch.tensor(min_p, device=dev, dtype=probs.dtype).unsqueeze(1) * probs.max(dim=-1, keepdim=True).values
        logits = logits.masked_fill(probs < floor, _NEG_INF)
    return logits


def _prepare_row(row: torch.Tensor, s: RowSampler) -> None:
    """Penalties, banned tokens and the output constraint, in place on one row's logits."""
    p = s.params
    if p.repetition_penalty != 1.0 or p.presence_penalty or p.frequency_penalty:
        _apply_penalties(row, s)
    banned = s.banned_now
    if banned:
        row[banned] = _NEG_INF
    if s.logits_processor is not None:
        s.logits_processor(s.output_ids, row)


def _no_token(s: RowSampler) -> CarafeError:
    """The error of a row whose every token is banned: by the caller's stop tokens and min_tokens, or by its
    output constraint."""
    if s.logits_processor is not None and not s.banned_now:
        return InvalidInput(
            f"no token can follow the {len(s.output_ids)} generated so far under the output constraint",
            param=s.params.constraint.param if s.params.constraint is not None else "response_format",
            code="no_allowed_token",
        )
    return InvalidInput(
        f"no token may be generated: stop_token_ids, the end-of-sequence tokens and min_tokens "
        f"({s.params.min_tokens}) together ban every token of the vocabulary",
        param="stop_token_ids",
        code="no_allowed_token",
    )


def _row_faults(logits: torch.Tensor, samplers: list[RowSampler]) -> dict[int, CarafeError]:
    """Rows no token can be drawn from: scores that are not numbers (NaN, +inf), or every token banned."""
    finite = torch.isfinite(logits)
    if bool(finite.all()):  # the common case: one pass over the scores
        return {}
    broken = (~finite & ~torch.isneginf(logits)).any(dim=-1).tolist()
    alive = finite.any(dim=-1).tolist()
    faults: dict[int, CarafeError] = {}
    for i, s in enumerate(samplers):
        if broken[i]:
            faults[i] = EngineUnavailable(
                "generation failed: the model's scores for this request are not numbers (NaN or infinite); "
                "the adapter it uses may be broken"
            )
        elif not alive[i]:
            faults[i] = _no_token(s)
    return faults


def sample_next(logits: torch.Tensor, samplers: list[RowSampler]) -> list[int | CarafeError]:
    """The next token of each row (``logits`` is ``(rows, vocab)``), or why that row cannot go on.

    A row fails alone: its error takes its place in the list and the other rows are sampled as usual.
    """
    logits = logits.float()
    failed: dict[int, CarafeError] = {}
    for i, s in enumerate(samplers):
        try:
            _prepare_row(logits[i], s)
        except Exception as exc:  # a bad penalty or constraint is this row's fault alone
            log.exception("sampling a row failed")
            failed[i] = EngineUnavailable(f"generation failed: {exc}")
    faults = {**_row_faults(logits, samplers), **failed}
    if faults:
        logits[list(faults)] = 0.0  # keep the vectorised steps below finite
    good = [i for i in range(len(samplers)) if i not in faults]
    tokens: list[int | CarafeError] = logits.argmax(dim=-1).tolist()
    hot = [i for i in good if samplers[i].params.temperature > 0]
    if hot:
        idx = torch.tensor(hot, device=logits.device)
        t = torch.tensor([samplers[i].params.temperature for i in hot], device=logits.device, dtype=logits.dtype)
        probs = _filter(logits[idx] / t.unsqueeze(1), [samplers[i] for i in hot]).softmax(dim=-1)
        for j, i in enumerate(hot):
            try:
                tokens[i] = int(torch.multinomial(probs[j], 1, generator=samplers[i].generator)[0])
            except RuntimeError as exc:  # e.g. an underflowed distribution: this row only
                log.exception("drawing a token failed")
                tokens[i] = EngineUnavailable(f"generation failed: {exc}")
    for i, fault in faults.items():
        tokens[i] = fault
    wants = [(i, tok) for i in good if isinstance(tok := tokens[i], int) and samplers[i].params.logprobs is not None]
    if wants:
        logprobs = logits[[i for i, _ in wants]].log_softmax(dim=-1)
        _record_logprobs(logprobs, [samplers[i] for i, _ in wants], [tok for _, tok in wants])
    return tokens


def _record_logprobs(logprobs: torch.Tensor, samplers: list[RowSampler], tokens: list[int]) -> None:
    """The sampled token's logprob and the top-k of each row's step distribution."""
    k = max(s.params.logprobs or 0 for s in samplers)
    top = logprobs.topk(k, dim=-1) if k else None
    for j, (s, token) in enumerate(zip(samplers, tokens)):
        alts: list[tuple[int, float]] = []
        if top is not None and s.params.logprobs:
            n = s.params.logprobs
            alts = list(zip(top.indices[j, :n].tolist(), top.values[j, :n].tolist()))
        s.logprob_steps.append((token, float(logprobs[j, token]), alts))
