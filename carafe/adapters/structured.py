"""Constrained decoding: an :class:`OutputConstraint` compiled by llguidance into a
per-row logits mask.

Each constrained request owns a :class:`GrammarMask` (its grammar matcher); the
sampler calls it on that row's logits only, so constrained and free rows share one
batch and one forward pass. Grammars are compiled once per distinct constraint
(an LRU cache); a constraint llguidance cannot compile is an :class:`InvalidInput`
naming the request field it came from.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from carafe.adapters.engine import OutputConstraint, TokenLogprob
from carafe.errors import InvalidInput

log = logging.getLogger("carafe.adapters.structured")
if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

# JSON as compact as a small model writes it well: no free whitespace runs
_JSON_OPTIONS: JsonCompileOptions = {"whitespace_flexible": False, "key_separator": ": ", "item_separator": ", "}


def _grammar_source(c: OutputConstraint) -> str:
    import llguidance

    if c.kind == "json_object":
        return llguidance.LLMatcher.grammar_from_json_schema({"type": "object"}, defaults=_JSON_OPTIONS)
    if c.kind == "json_schema":
        if not isinstance(c.spec, dict):
            raise InvalidInput(f"{c.param}: the JSON schema must be an object", param=c.param)
        try:
            return llguidance.LLMatcher.grammar_from_json_schema(
                c.spec, defaults=_JSON_OPTIONS, overrides=None if c.strict else {"lenient": True}
            )
        except ValueError as exc:
            raise InvalidInput(f"{c.param}: the JSON schema is not valid: {exc}", param=c.param) from None
    if c.kind == "regex":
        return llguidance.LLMatcher.grammar_from_regex(str(c.spec))
    return llguidance.LLMatcher.grammar_from_lark(str(c.spec))


class GrammarCompiler:
    """Compiles constraints for one tokenizer; thread-safe, with an LRU of grammars."""

    def __init__(self, hf_tokenizer: Any, *, cache_size: int = 256) -> None:
        self._hf = hf_tokenizer
        self._llt: Any = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._cache_size = cache_size
        self._token_bytes: dict[int, bytes] = {}

    @property
    def tokenizer(self) -> Any:
        """The llguidance tokenizer (built on first use, about a second)."""
        with self._lock:
            if self._llt is None:
                import llguidance.hf

                self._llt = llguidance.hf.from_tokenizer(self._hf)
            return self._llt

    def compile(self, c: OutputConstraint) -> str:
        """The checked grammar for ``c``; InvalidInput naming ``c.param`` if it cannot compile."""
        import llguidance

        key = json.dumps([c.kind, c.spec, c.strict], sort_keys=True, default=str)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        grammar = _grammar_source(c)
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self.tokenizer)
        if is_error:
            what = {"json_object": "JSON", "json_schema": "JSON schema", "regex": "regex"}.get(c.kind, "grammar")
            raise InvalidInput(
                f"{c.param}: the {what} cannot be compiled for constrained decoding: "
                f"{messages[0] if messages else 'unknown error'}",
                param=c.param,
            )
        with self._lock:
            self._cache[key] = grammar
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return grammar

    def mask_for(self, c: OutputConstraint, eos_id: int) -> GrammarMask:
        import llguidance

        matcher = llguidance.LLMatcher(self.tokenizer, self.compile(c), log_level=0)
        if matcher.is_error():
            raise InvalidInput(f"{c.param}: {matcher.get_error()}", param=c.param)
        return GrammarMask(matcher, eos_id)

    def token_bytes(self, token: int) -> bytes:
        raw = self._token_bytes.get(token)
        if raw is None:
            raw = self._token_bytes[token] = self.tokenizer.decode_bytes([token])
        return raw

    def logprob(self, token: int, logprob: float) -> TokenLogprob:
        raw = self.token_bytes(token)
        return TokenLogprob(token=raw.decode("utf-8", errors="replace"), logprob=logprob, bytes=list(raw))


class GrammarMask:
    """One request's logits processor: feeds the sampled tokens to its matcher and
    masks the tokens the grammar does not allow next (``(output_ids, row) -> None``)."""

    def __init__(self, matcher: Any, eos_id: int) -> None:
        self._matcher = matcher
        self._eos = eos_id
        self._consumed = 0
        self._words = np.empty(0, dtype=np.int32)

    def __call__(self, output_ids: list[int], row: torch.Tensor) -> None:
        m = self._matcher
        if len(output_ids) > self._consumed:
            if not m.consume_tokens(output_ids[self._consumed :]):
                log.warning("constrained decoding: a token the grammar refused: %s", m.get_error())
            self._consumed = len(output_ids)
        vocab = row.shape[-1]
        if m.is_error() or m.is_stopped():
            allowed = torch.zeros(vocab, dtype=torch.bool, device=row.device)
        else:
            words = (vocab + 31) // 32
            if self._words.size != words:
                self._words = np.empty(words, dtype=np.int32)
            m.unsafe_compute_mask_ptr(self._words.ctypes.data, words * 4)
            bits = np.unpackbits(self._words.view(np.uint8), bitorder="little")[:vocab]
            allowed = torch.from_numpy(bits.view(np.bool_)).to(row.device)
        row.masked_fill_(~allowed, float("-inf"))
        if m.is_error() or m.is_stopped() or bool(torch.isneginf(row).all()):
            row[self._eos] = 0.0  # done (or stuck): end the output
