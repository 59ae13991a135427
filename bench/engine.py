"""LocalEngine throughput: one stream vs 8 concurrent (one adapter) vs 8 concurrent over 8 adapters.

    python bench/engine.py [--quick] [--tokens N] [--threads T] [--quantize int4] [--kernels auto] [--rounds 5]

The engine as ``make run`` serves it by default (int4 on Carafe's native kernels where they
build); ``--quantize none`` measures the fp32 transformers + PEFT engine, ``--kernels torch``
int4 on torch's kernel.

Prints tokens/s (wall clock and per CPU-second of this process), time to first
token (p50/p99) and peak RSS, and compares the concurrent runs with the single
stream measured in the same run (goals: 8 concurrent >= 3x single-stream
throughput; mixed adapters >= 80% of one adapter). CPU numbers are noisy when
other processes share the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from carafe.adapters import ChatMessage, EngineConfig, LocalEngine, SamplingParams  # noqa: E402
from tests.adapters.conftest import write_lora  # noqa: E402

PROMPTS = [
    "Explain how a bicycle works.",
    "Write a short poem about rain.",
    "List some uses of copper.",
    "Describe a busy market.",
    "Why is the sky blue?",
    "Give tips for learning to cook.",
    "What do bees do in winter?",
    "Summarise the water cycle.",
]


async def one(engine: LocalEngine, prompt: str, tokens: int, adapter: str | None) -> tuple[float, int]:
    """(time to first token, tokens generated)."""
    t0 = time.perf_counter()
    ttft, n = 0.0, 0
    params = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)
    async for chunk in engine.chat([ChatMessage("user", prompt)], params, adapter=adapter):
        if not ttft and (chunk.text or chunk.token_ids):
            ttft = time.perf_counter() - t0
        n = chunk.completion_tokens or n
    return ttft, n


async def scenario(engine: LocalEngine, adapters: list[str | None], tokens: int) -> dict[str, float]:
    t0, cpu0 = time.perf_counter(), time.process_time()
    steps0 = engine.stats()["steps"]
    results = await asyncio.gather(*[one(engine, PROMPTS[i % len(PROMPTS)], tokens, a) for i, a in enumerate(adapters)])
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    ttfts = sorted(r[0] for r in results)
    total = sum(r[1] for r in results)
    return {
        "streams": len(adapters),
        "tokens": total,
        "wall_s": wall,
        "tok_s": total / wall,
        "tok_cpu_s": total / max(cpu, 1e-9),
        "ttft_p50": statistics.median(ttfts),
        "ttft_p99": ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))],
        "steps": engine.stats()["steps"] - steps0,
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer tokens per request")
    ap.add_argument("--tokens", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--quantize", default="int4", choices=["none", "bf16", "int8", "int4"])
    ap.add_argument("--kernels", default="auto", choices=["auto", "native", "torch"])
    ap.add_argument("--rounds", type=int, default=5, help="rounds of every scenario (the median is shown)")
    args = ap.parse_args()
    tokens = args.tokens or (12 if args.quick else 48)
    engine = LocalEngine(
        EngineConfig(
            device="cpu", max_batch_size=16, threads=args.threads, quantize=args.quantize, kernels=args.kernels
        ),
        models_dir=REPO / ".carafe" / "models",
    )
    t0 = time.perf_counter()
    await engine.start()
    kernels = engine._decoder.kernels if engine._decoder is not None else "transformers + PEFT"
    print(
        f"model loaded in {time.perf_counter() - t0:.1f}s (quantize {args.quantize}, {kernels} kernels); "
        f"{tokens} tokens per request"
    )
    with tempfile.TemporaryDirectory() as tmp:
        names = [f"bench-{i}" for i in range(8)]
        for i, name in enumerate(names):
            path = write_lora(Path(tmp) / name, engine.files.folder, rank=8, seed=i)
            await engine.load_adapter(name, str(path))
        # warm-up: every adapter once, so each has its chat template's system turn in the prefix
        # cache (kept per adapter), as it would in steady serving; the mixes then differ only in LoRA
        for name in [None, *names]:
            await one(engine, PROMPTS[0], 2, name)
        plan = [
            ("1 stream, base", [None]),
            ("1 stream, adapter", [names[0]]),
            ("8 streams, base", [None] * 8),
            ("8 streams, 1 adapter", [names[0]] * 8),
            ("8 streams, 8 adapters", names),
        ]
        # every scenario once per round, the rounds interleaved: each row is the round of median tok/s
        runs: dict[str, list[dict[str, float]]] = {label: [] for label, _ in plan}
        for _ in range(args.rounds):
            for label, adapters in plan:
                runs[label].append(await scenario(engine, adapters, tokens))
        rows = [(label, sorted(runs[label], key=lambda r: r["tok_s"])[len(runs[label]) // 2]) for label, _ in plan]
    await engine.close()
    print(f"median of {args.rounds} interleaved rounds")
    print(
        f"{'scenario':<24}{'tokens':>8}{'wall s':>9}{'tok/s':>9}{'TTFT p50':>10}{'TTFT p99':>10}"
        f"{'steps':>7}{'tok/CPU-s':>11}"
    )
    for label, r in rows:
        print(
            f"{label:<24}{r['tokens']:>8}{r['wall_s']:>9.2f}{r['tok_s']:>9.1f}{r['ttft_p50']:>10.3f}"
            f"{r['ttft_p99']:>10.3f}{r['steps']:>7}{r['tok_cpu_s']:>11.1f}"
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for metric, what in (("tok_s", "wall-clock"), ("tok_cpu_s", "per CPU-second, robust to other load")):
        single, same, mixed = rows[1][1][metric], rows[3][1][metric], rows[4][1][metric]
        print(
            f"[{what}] 8 streams / 1 stream (same adapter): {same / single:.2f}x (goal >= 3x); "
            f"8 adapters / 1 adapter at 8 streams: {mixed / same:.0%} (goal >= 80%)"
        )
    print(f"peak RSS: {peak_mb:.0f} MB (goal <= 1536 MB)")


if __name__ == "__main__":
    asyncio.run(main())
