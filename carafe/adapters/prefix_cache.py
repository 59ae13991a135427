"""Prompt KV kept for reuse: a prompt that starts like a recent one (the same system
prompt, the same retrieved passages) skips recomputing that start.

Keys and values at position ``t`` depend only on tokens ``0..t`` (and the adapter, when
its LoRA touches k/v projections), so the longest common token prefix with any stored
prompt of the same adapter is exact to reuse. Entries are whole prompts, evicted least
recently used first once their tokens exceed the budget. A single request gets the
tokens it would get without the cache: on int4 every prefill pass of two or more tokens
gives a token the same keys, values and logits wherever the prompt is cut, so a hit may
end anywhere (``align`` 1) as long as two tokens are left; on bf16/int8 (whose matmuls
sum in an order that depends on the pass's length) a hit is cut to a multiple of the
prefill chunk (``align``), so the rest is computed in the very chunks a miss computes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

MIN_REUSE = 16  # shorter common starts are cheaper to recompute than to copy
LEFT = 2  # tokens a hit leaves to compute (a one-token pass takes the decode step's arithmetic)


@dataclass(slots=True)
class PrefixHit:
    length: int  # tokens reused: the entry's first ``length`` columns
    kv: Any  # the stored entry, whole (the caller takes its first ``length`` columns)


class PrefixCache:
    """Recent prompts' KV by (adapter, token ids), within ``budget_tokens``. An entry is whatever
    the scheduler stores for a prompt (per-layer keys and values, or a native row's snapshot)."""

    def __init__(self, budget_tokens: int, align: int = 1) -> None:
        self.budget = budget_tokens
        self.align = max(1, align)
        self._entries: OrderedDict[tuple[str | None, tuple[int, ...]], Any] = OrderedDict()
        self._tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, adapter: str | None, prompt: list[int]) -> PrefixHit | None:
        """The longest stored start of ``prompt`` (leaving at least ``LEFT`` tokens to compute)."""
        best, best_key = 0, None
        for key in self._entries:
            if key[0] != adapter:
                continue
            stored = key[1]
            n = min(len(stored), len(prompt) - LEFT)
            common = 0
            while common < n and stored[common] == prompt[common]:
                common += 1
            if common > best:
                best, best_key = common, key
        best -= best % self.align
        if best_key is None or best < MIN_REUSE:
            return None
        self._entries.move_to_end(best_key)
        return PrefixHit(best, self._entries[best_key])

    def wants(self, prompt: list[int]) -> bool:
        """Whether :meth:`store` would keep this prompt (so the caller copies its KV only then)."""
        return MIN_REUSE <= len(prompt) <= self.budget

    def store(self, adapter: str | None, prompt: list[int], kv: Any) -> None:
        """Keep one prompt's KV (a copy the cache may hold on to)."""
        if len(prompt) < MIN_REUSE or len(prompt) > self.budget:
            return
        key = (adapter, tuple(prompt))
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        while self._entries and self._tokens + len(prompt) > self.budget:  # room first: never both in memory
            old, _ = self._entries.popitem(last=False)
            self._tokens -= len(old[1])
        self._entries[key] = kv
        self._tokens += len(prompt)

    def forget(self, adapter: str | None) -> None:
        """Drop every entry computed with ``adapter`` (it is being unloaded)."""
        for key in [k for k in self._entries if k[0] == adapter]:
            del self._entries[key]
            self._tokens -= len(key[1])
