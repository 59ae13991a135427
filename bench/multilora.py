"""Multi-LoRA throughput: 8 concurrent requests spread over 8 different adapters vs
8 on one adapter vs the base model, in the same run on the embedded engine.

    python bench/multilora.py           # 3 rounds per scenario, 32 tokens each
    python bench/multilora.py --quick   # 1 round, 16 tokens

Each round sends 8 requests at once (greedy, fixed length) and waits for all.
Prints tokens/s per scenario (median over rounds) and the mixed/single ratio
(goal >= 80%: adapters batched together, as LoRAX and vLLM do on GPUs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROMPTS = [
    "Explain what a LoRA adapter is.",
    "Write a welcome note.",
    "Three tips for clear emails.",
    "List versus tuple in Python?",
    "Describe onboarding.",
    "Why do backups matter?",
    "A haiku about autumn.",
    "How do I reset my password?",
]


async def round_trip(engine, adapters: list[str | None], tokens: int) -> tuple[int, float]:
    from carafe.adapters.engine import ChatMessage, SamplingParams

    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)

    async def one(i: int, adapter: str | None) -> int:
        last = None
        async for chunk in engine.chat([ChatMessage("user", PROMPTS[i % len(PROMPTS)])], params, adapter=adapter):
            last = chunk
        return last.completion_tokens if last else 0

    t0 = time.monotonic()
    counts = await asyncio.gather(*(one(i, a) for i, a in enumerate(adapters)))
    return sum(counts), time.monotonic() - t0


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rounds, tokens = (1, 16) if args.quick else (3, 32)

    from carafe.adapters.local import LocalEngine
    from carafe.config import load_config
    from carafe.gateway.routing import build_router
    from tests.lora import make_lora

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        cfg = load_config(
            None,
            data_dir=tmp,
            models_cache=REPO / ".carafe" / "models",
            adapters={"registry": {"reconcile_interval_s": 0}},
        )
        engine = LocalEngine(cfg.adapters.engine, models_dir=cfg.models_dir)
        await engine.start()
        router = build_router(cfg, engine)
        refs = []
        for i in range(8):
            av = router.registry.add(make_lora(tmp / f"src{i}", rank=8, seed=i), actor="bench", name=f"lora{i}")
            refs.append(await router.manager.ensure(av.name, av.version))
        scenarios = {"base model": [None] * 8, "8 on one adapter": [refs[0]] * 8, "8 over 8 adapters": refs}
        await round_trip(engine, [None, refs[0]], 4)  # warm-up
        results: dict[str, float] = {}
        for name, adapters in scenarios.items():
            rates = []
            for _ in range(rounds):
                n, dt = await round_trip(engine, adapters, tokens)
                rates.append(n / dt)
            results[name] = statistics.median(rates)
            print(
                f"{name:<20} {results[name]:8.1f} tok/s  (median of {rounds}; rounds: "
                f"{', '.join(f'{r:.1f}' for r in rates)})"
            )
        # Baseline in the same run: PEFT's own mixed-batch path (a loop over adapters in every layer)
        from carafe.adapters import gathered

        await asyncio.wrap_future(engine._scheduler.call(lambda: gathered.uninstall(engine._peft)))
        rates = []
        for _ in range(rounds):
            n, dt = await round_trip(engine, refs, tokens)
            rates.append(n / dt)
        results["peft loop"] = statistics.median(rates)
        print(
            f"{'8 over 8, PEFT loop':<20} {results['peft loop']:8.1f} tok/s  (median of {rounds}; baseline: "
            "adapters.engine.gathered_lora: false)"
        )
        await asyncio.wrap_future(engine._scheduler.call(lambda: gathered.install(engine._peft)))
        ratio = results["8 over 8 adapters"] / results["8 on one adapter"]
        print(
            f"mixed / single adapter: {ratio * 100:.0f}%  (goal >= 80%); with PEFT's loop: "
            f"{results['peft loop'] / results['8 on one adapter'] * 100:.0f}%"
        )
        print(f"single adapter / base:  {results['8 on one adapter'] / results['base model'] * 100:.0f}%")
        await router.close()
        await engine.close()
    print("note: the machine is shared with other engineers' CPU work; timings are noisy")


if __name__ == "__main__":
    asyncio.run(main())
