"""Hot-swap benchmark: clients stream continuously while an adapter is promoted and
rolled back, then the adapter is loaded/unloaded many times to look for leaks.

    python bench/hotswap.py            # 8 clients, 20 swaps, 100 load/unload cycles
    python bench/hotswap.py --quick    # 8 clients, 6 swaps, 20 cycles
    python bench/hotswap.py --backend vllm --vllm-url http://127.0.0.1:8001   # a running vLLM
    python bench/hotswap.py --backend vllm   # starts vLLM CPU itself (scripts/vllm-env)

Runs in process with the real registry, manager and router over the embedded
engine (LocalEngine) or a real vLLM server through its runtime LoRA API
(VLLMEngine; the registry must be at the same path for vLLM, as on one machine).
Prints: requests served and failed (goal 0); time from each promote/rollback to
the first token streamed by the new version, p50/p99 (goal p99 <= 1 s); the time
a promote call itself takes; and the resident memory of the serving process
(this one, or the vLLM server this bench started) before and after the
load/unload cycles (goal: growth <= 5%).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process and its children (vLLM runs its engine in a child)."""
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def models_cache() -> Path:
    return Path(os.environ.get("CARAFE_TEST_MODELS", REPO / ".carafe" / "models"))


async def build(tmp: Path, vllm_url: str | None):
    from carafe.adapters.base_model import prepare_base_model
    from carafe.adapters.local import LocalEngine
    from carafe.adapters.vllm import VLLMEngine
    from carafe.config import load_config
    from carafe.gateway.routing import build_router
    from tests.lora import make_lora

    engine_cfg = (
        {
            "backend": "vllm",
            "vllm_url": vllm_url,
            "vllm_model_digest": prepare_base_model("smollm2", models_cache()).digest,
        }
        if vllm_url
        else {}
    )
    cfg = load_config(
        None,
        data_dir=tmp,
        models_cache=models_cache(),
        adapters={"engine": engine_cfg, "registry": {"reconcile_interval_s": 0, "retire_grace_s": 0.5}},
    )
    engine = (
        VLLMEngine(cfg.adapters.engine) if vllm_url else LocalEngine(cfg.adapters.engine, models_dir=cfg.models_dir)
    )
    await engine.start()
    router = build_router(cfg, engine)
    for seed in (1, 2):
        src = make_lora(tmp / f"src{seed}", rank=8, seed=seed)
        router.registry.add(src, actor="bench", name="swap")
    await router.start()
    return engine, router


async def client(router, user: str, stop: asyncio.Event, log: list, failures: list, tokens: int) -> None:
    from carafe.adapters.engine import ChatMessage, SamplingParams
    from carafe.gateway.auth import Principal

    principal = Principal(user=user)
    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            d = await router.resolve("swap", principal)
            first = None
            async for chunk in router.engine.chat([ChatMessage("user", "Say hello.")], params, adapter=d.adapter):
                if first is None and chunk.text:
                    first = time.monotonic()
            log.append((t0, first or time.monotonic(), d.adapter))
        except Exception as exc:  # a failed request is what this bench counts
            failures.append(f"{type(exc).__name__}: {exc}")


async def swaps(router, n: int, gap: float, switches: list) -> None:
    manager = router.manager
    for i in range(n):
        await asyncio.sleep(gap)
        t0 = time.monotonic()
        if i % 2 == 0:
            await manager.promote("swap", 2, actor="bench")
            target = "swap@2"
        else:
            await manager.rollback("swap", actor="bench")
            target = "swap@1"
        switches.append((t0, time.monotonic(), target))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=None, help="Tokens per request (default 12; --quick 4)")
    ap.add_argument("--gap", type=float, default=1.5, help="Seconds between promotes/rollbacks")
    ap.add_argument("--backend", choices=["local", "vllm"], default="local")
    ap.add_argument(
        "--vllm-url",
        help="a running vLLM OpenAI server with --enable-lora and runtime LoRA updating "
        "(default with --backend vllm: start one from scripts/vllm-env's environment)",
    )
    ap.add_argument("--cycles", type=int, default=None, help="load/unload cycles (default 100; vllm 20; --quick 20)")
    args = ap.parse_args()
    n_swaps, cycles = (6, 20) if args.quick else (20, 100 if args.backend == "local" else 20)
    cycles = args.cycles or cycles
    tokens = args.tokens or (4 if args.quick else 12)
    server = None
    if args.backend == "vllm" and not args.vllm_url:
        from tests.vllm.launch import start_for_bench

        server = start_for_bench()
    vllm_url = (args.vllm_url or server.url) if args.backend == "vllm" else None
    try:
        await run(args, n_swaps, cycles, tokens, vllm_url, server.proc.pid if server else None)
    finally:
        if server is not None:
            server.stop()


async def run(
    args: argparse.Namespace, n_swaps: int, cycles: int, tokens: int, vllm_url: str | None, serving_pid: int | None
) -> None:
    with tempfile.TemporaryDirectory() as tmpdir:
        engine, router = await build(Path(tmpdir), vllm_url)
        stop = asyncio.Event()
        log: list = []
        failures: list = []
        switches: list = []
        clients = [
            asyncio.create_task(client(router, f"u{i}", stop, log, failures, tokens)) for i in range(args.clients)
        ]
        await asyncio.sleep(2.0)  # warm-up
        await swaps(router, n_swaps, args.gap, switches)
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.gather(*clients)

        to_new, after_flip, promote_s, waits, ttfts = [], [], [], [], []
        for t0, t1, target in switches:
            promote_s.append(t1 - t0)
            new = sorted((first, start) for start, first, ref in log if ref == target and start >= t0)
            if new:
                first, start = new[0]
                to_new.append(first - t0)
                after_flip.append(max(0.0, first - t1))
                waits.append(max(0.0, start - t1))  # until a client, done with its request, sends the next
                ttfts.append(first - start)
        print(
            f"hot-swap on {args.backend}{' ' + vllm_url if vllm_url else ''}: {args.clients} streaming clients "
            f"({tokens} tokens each), {len(switches)} promotes/rollbacks"
        )
        print(f"  requests served       {len(log)}")
        print(f"  requests failed       {len(failures)}  (goal 0){'  e.g. ' + failures[0] if failures else ''}")
        if not to_new:
            print("  no request reached a new version: raise --gap (the machine is too slow for the swap rate)")
            to_new = after_flip = [float("nan")]
        print(
            f"  switch -> first token of new version  p50 {statistics.median(to_new):.3f} s  "
            f"p99 {pct(to_new, 99):.3f} s  max {max(to_new):.3f} s  (goal p99 <= 1 s; n={len(to_new)})"
        )
        print(
            f"  channel flip -> first token of new version  p50 {statistics.median(after_flip):.3f} s  "
            f"p99 {pct(after_flip, 99):.3f} s  (excludes the load done before the flip)"
        )
        print(
            f"  promote/rollback call (load + channel move)  p50 {statistics.median(promote_s):.3f} s  "
            f"p99 {pct(promote_s, 99):.3f} s"
        )
        if waits:
            print(
                f"    of which: flip -> next request sent  p50 {statistics.median(waits):.3f} s  p99 "
                f"{pct(waits, 99):.3f} s; "
                f"that request's time to first token  p50 {statistics.median(ttfts):.3f} s  p99 {pct(ttfts, 99):.3f} s"
            )

        await router.close()
        path = str(router.registry.get("swap", 1).path)
        await engine.load_adapter("cycle", path)  # warm-up: first-load allocations are not a leak
        await engine.unload_adapter("cycle")
        gc.collect()
        measured = serving_pid or (None if vllm_url else os.getpid())  # a vLLM we did not start: not ours to read
        before = rss_mb(measured) if measured else float("nan")
        t0 = time.monotonic()
        for _ in range(cycles):
            await engine.load_adapter("cycle", path)
            await engine.unload_adapter("cycle")
        gc.collect()
        after = rss_mb(measured) if measured else float("nan")
        print(
            f"load/unload: {cycles} cycles in {time.monotonic() - t0:.1f} s "
            f"({(time.monotonic() - t0) / cycles * 1000:.0f} ms/cycle)"
        )
        whose = "vLLM server" if serving_pid else "this process" if measured else "n/a: vLLM not started here"
        print(
            f"  RSS ({whose}) "
            f"before {before:.1f} MiB  after {after:.1f} MiB  growth {(after - before) / before * 100:+.2f}% "
            "(goal <= 5%)"
        )
        await engine.close()
    print("note: the machine is shared with other engineers' CPU work; timings are noisy")


if __name__ == "__main__":
    asyncio.run(main())
