"""PrefixCache: longest common start per adapter, cut to ``align``, LRU within budget; an entry is
whatever the scheduler stored (it takes the hit's first ``length`` columns itself)."""

from __future__ import annotations

import torch

from carafe.adapters.prefix_cache import LEFT, MIN_REUSE, PrefixCache


def _kv(n: int, fill: float = 1.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.full((1, 1, n, 2), fill), torch.full((1, 1, n, 2), -fill)) for _ in range(2)]


def test_hit_is_the_common_start_cut_to_the_chunk_and_per_adapter():
    cache = PrefixCache(1000, align=16)
    prompt = list(range(100))
    cache.store("a", prompt, _kv(100))
    hit = cache.lookup("a", prompt[:70] + [999] * 10)
    assert hit is not None and hit.length == 64 and hit.kv[0][0].shape[2] == 100  # the whole entry
    assert cache.lookup(None, prompt) is None  # another adapter's KV never serves
    assert cache.lookup("a", prompt).length == 96  # at least LEFT tokens are left to compute
    assert cache.lookup("a", [5] * 100) is None


def test_unaligned_hit_ends_anywhere_but_leaves_tokens_to_compute():
    cache = PrefixCache(1000)  # align 1: int4, where a cut changes no token
    prompt = list(range(40))
    cache.store(None, prompt, _kv(40))
    assert cache.lookup(None, [*prompt[:21], 7, 8, 9]).length == 21
    hit = cache.lookup(None, prompt)
    assert hit.length == 40 - LEFT
    assert torch.equal(hit.kv[1][1], torch.full((1, 1, 40, 2), -1.0))


def test_short_starts_are_not_reused_and_budget_evicts_oldest():
    cache = PrefixCache(250)
    cache.store(None, list(range(MIN_REUSE - 1)), _kv(MIN_REUSE - 1))
    assert len(cache) == 0
    for start in (0, 1000, 2000):
        cache.store(None, list(range(start, start + 100)), _kv(100))
    assert len(cache) == 2 and cache.lookup(None, list(range(0, 100))) is None
    assert not cache.wants(list(range(MIN_REUSE - 1))) and not cache.wants(list(range(251)))
    cache.forget(None)
    assert len(cache) == 0
