"""Constrained decoding cost: json_schema-constrained vs free generation on LocalEngine.

    python bench/structured.py [--quick] [--tokens N] [--rounds R] [--threads T]

Runs free and constrained generation side by side in one process (alternating
rounds, so load from other processes hits both alike) at 1 and 8 concurrent
streams, every request generating exactly ``--tokens`` tokens (free: ignore_eos;
constrained: a schema whose shortest valid output is longer than that). Prints
tokens/s (wall and per CPU-second), inter-token latency p50/p99, the constrained /
free ratio (goal >= 90 %), grammar compile time p50/p99 over distinct schemas
(cold: no cache), and peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from carafe.adapters import ChatMessage, EngineConfig, LocalEngine, SamplingParams  # noqa: E402
from carafe.adapters.engine import OutputConstraint  # noqa: E402
from carafe.adapters.structured import GrammarCompiler  # noqa: E402

PROMPTS = [
    "List the items in a kitchen as JSON.",
    "Describe an inventory of a shop as JSON.",
    "Give a packing list for a trip as JSON.",
    "List some garden plants as JSON.",
    "Describe the contents of a toolbox as JSON.",
    "List groceries for a week as JSON.",
    "Describe books on a shelf as JSON.",
    "List parts of a bicycle as JSON.",
]
# long enough that every request runs to --tokens: at least 40 items
SCHEMA = {
    "type": "object",
    "required": ["items"],
    "additionalProperties": False,
    "properties": {
        "items": {
            "type": "array",
            "minItems": 40,
            "items": {
                "type": "object",
                "required": ["name", "qty", "ok"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "maxLength": 16},
                    "qty": {"type": "integer", "minimum": 0},
                    "ok": {"type": "boolean"},
                },
            },
        }
    },
}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


async def one(engine: LocalEngine, prompt: str, tokens: int, constrained: bool, gaps: list[float]) -> int:
    params = SamplingParams(
        temperature=0.7,
        seed=1,
        max_tokens=tokens,
        ignore_eos=not constrained,
        constraint=OutputConstraint("json_schema", SCHEMA) if constrained else None,
    )
    n, last = 0, None
    async for chunk in engine.chat([ChatMessage("user", prompt)], params):
        now = time.perf_counter()
        if last is not None and chunk.token_ids:
            gaps.append((now - last) / len(chunk.token_ids))
        last = now
        n = chunk.completion_tokens or n
    return n


async def scenario(engine: LocalEngine, streams: int, tokens: int, constrained: bool) -> dict[str, Any]:
    gaps: list[float] = []
    t0, cpu0 = time.perf_counter(), time.process_time()
    counts = await asyncio.gather(
        *[one(engine, PROMPTS[i % len(PROMPTS)], tokens, constrained, gaps) for i in range(streams)]
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    total = sum(counts)
    return {"tokens": total, "wall": wall, "cpu": cpu, "gaps": gaps}


def compile_times(engine: LocalEngine, n: int) -> list[float]:
    """Cold compile + matcher set-up of ``n`` distinct schemas (a fresh cache)."""
    compiler = GrammarCompiler(engine._tokenizer)
    compiler.tokenizer  # built once per engine, not per schema  # noqa: B018
    out = []
    for i in range(n):
        schema = {
            "type": "object",
            "additionalProperties": False,
            "required": [f"f{i}", "tags"],
            "properties": {
                f"f{i}": {"type": "string", "maxLength": 10 + i},
                "tags": {"type": "array", "items": {"enum": ["a", "b", f"t{i}"]}},
                "n": {"type": "integer", "minimum": i},
                "nested": {"type": "object", "properties": {"x": {"type": "number"}}},
            },
        }
        t0 = time.perf_counter()
        compiler.mask_for(OutputConstraint("json_schema", schema), 2)
        out.append(time.perf_counter() - t0)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer tokens and rounds")
    ap.add_argument("--tokens", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None, help="alternating free/constrained rounds per stream count")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = ap.parse_args()
    tokens = args.tokens or (24 if args.quick else 64)
    rounds = args.rounds or (1 if args.quick else 3)
    engine = LocalEngine(
        EngineConfig(device="cpu", max_batch_size=16, threads=args.threads),
        models_dir=Path(os.environ.get("CARAFE_TEST_MODELS", REPO / ".carafe" / "models")),
    )
    await engine.start()
    await one(engine, PROMPTS[0], 4, True, [])  # warm-up (builds the grammar tokenizer)
    await one(engine, PROMPTS[0], 4, False, [])
    print(f"{tokens} tokens per request, {rounds} alternating rounds; other processes may share the CPU")
    rows = []
    for streams in (1, 8):
        acc: dict[bool, dict[str, Any]] = {c: {"tokens": 0, "wall": 0.0, "cpu": 0.0, "gaps": []} for c in (False, True)}
        for _ in range(rounds):
            for constrained in (False, True):
                r = await scenario(engine, streams, tokens, constrained)
                a = acc[constrained]
                a["tokens"] += r["tokens"]
                a["wall"] += r["wall"]
                a["cpu"] += r["cpu"]
                a["gaps"] += r["gaps"]
        rows.append((streams, acc))
    print(f"{'scenario':<26}{'tokens':>8}{'tok/s':>9}{'tok/CPU-s':>11}{'ITL p50 ms':>12}{'ITL p99 ms':>12}")
    for streams, acc in rows:
        for constrained in (False, True):
            a = acc[constrained]
            label = f"{streams} stream{'s' if streams > 1 else ''}, {'json_schema' if constrained else 'free'}"
            print(
                f"{label:<26}{a['tokens']:>8}{a['tokens'] / a['wall']:>9.1f}{a['tokens'] / max(a['cpu'], 1e-9):>11.1f}"
                f"{statistics.median(a['gaps']) * 1000:>12.1f}{pct(a['gaps'], 0.99) * 1000:>12.1f}"
            )
        free, con = acc[False], acc[True]
        wall_ratio = (con["tokens"] / con["wall"]) / (free["tokens"] / free["wall"])
        cpu_ratio = (con["tokens"] / max(con["cpu"], 1e-9)) / (free["tokens"] / max(free["cpu"], 1e-9))
        print(
            f"  {streams} stream(s): constrained / free = {wall_ratio:.0%} wall, {cpu_ratio:.0%} per CPU-second "
            "(goal >= 90%)"
        )
    times = compile_times(engine, 20 if args.quick else 100)
    print(
        f"schema compile (cold, {len(times)} distinct schemas): p50 {statistics.median(times) * 1000:.2f} ms, "
        f"p99 {pct(times, 0.99) * 1000:.2f} ms"
    )
    await engine.close()
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    asyncio.run(main())
