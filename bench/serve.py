"""Serving benchmark: N concurrent streaming clients through the gateway vs the
same load straight on the engine, in one run, so the gateway's own overhead is a
printed number.

    python bench/serve.py                # 1, 4, 8 concurrent; starts its own gateway
    python bench/serve.py --quick        # fewer requests
    python bench/serve.py --url http://127.0.0.1:8000 --key crf_...   # an already running gateway
    python bench/serve.py --backend vllm [--vllm-url URL]  # Carafe and LiteLLM in front of one vLLM
                                                           # (bench/serve_vllm.py)

The gateway it starts runs twice: with guards off (the serving path itself: auth,
rate limit, routing, OpenAI shapes, SSE) and with the default guard policy (input
checks before the engine; output released a sentence at a time, so its TTFT holds
the first sentence and tokens arrive in bursts). Prints, per concurrency: time to
first token p50/p99, tokens/s per stream and in total, for the gateway and for the
engine; the gateway overhead per request as
the gateway reports it (``x-carafe-overhead-duration-ms``) and as the TTFT
difference; the batching speed-up (total throughput at 8 vs 1); and the peak RSS
of the serving process with the base model loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = [
    "Explain what a LoRA adapter is in two sentences.",
    "Write a short welcome note for a new employee.",
    "List three tips for writing clear emails.",
    "What is the difference between a list and a tuple in Python?",
    "Describe a good onboarding checklist.",
    "Summarize why backups matter.",
    "Give a haiku about autumn.",
    "How do I reset my password?",
]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


class Result:
    def __init__(self) -> None:
        self.ttft: list[float] = []
        self.overhead_ms: list[float] = []
        self.per_stream_tps: list[float] = []
        self.tokens = 0
        self.wall = 0.0
        self.failed = 0

    def row(self, label: str, n: int) -> list[str]:
        total = self.tokens / self.wall if self.wall else 0.0
        return [
            label,
            str(n),
            f"{pct(self.ttft, 50) * 1000:.1f}",
            f"{pct(self.ttft, 99) * 1000:.1f}",
            f"{statistics.median(self.per_stream_tps) if self.per_stream_tps else 0:.1f}",
            f"{total:.1f}",
            str(self.failed),
        ]


async def gateway_load(url: str, key: str, model: str, n: int, per_client: int, max_tokens: int) -> Result:
    import httpx
    import openai

    res = Result()
    client = openai.AsyncOpenAI(
        base_url=f"{url}/v1",
        api_key=key,
        max_retries=0,
        http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=64), timeout=300),
    )

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        first = None
        tokens = 0
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model=model,
                messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                max_tokens=max_tokens,
                temperature=0.7,
                seed=i,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"ignore_eos": True},
            )
            res.overhead_ms.append(float(raw.headers.get("x-carafe-overhead-duration-ms", "nan")))
            async for chunk in raw.parse():
                if chunk.choices and chunk.choices[0].delta.content and first is None:
                    first = time.perf_counter()
                if chunk.usage:
                    tokens = chunk.usage.completion_tokens
        except Exception:
            res.failed += 1
            return
        end = time.perf_counter()
        res.ttft.append((first or end) - t0)
        res.tokens += tokens
        if first and end > first:
            res.per_stream_tps.append(max(tokens - 1, 1) / (end - first))

    async def worker(w: int) -> None:
        for r in range(per_client):
            await one(w * per_client + r)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(n)))
    res.wall = time.perf_counter() - t0
    await client.close()
    return res


async def engine_load(engine, n: int, per_client: int, max_tokens: int) -> Result:
    from carafe.adapters.engine import ChatMessage, SamplingParams

    res = Result()

    async def one(i: int) -> None:
        params = SamplingParams(max_tokens=max_tokens, temperature=0.7, seed=i, ignore_eos=True)
        t0 = time.perf_counter()
        first = None
        tokens = 0
        async for chunk in engine.chat([ChatMessage("user", PROMPTS[i % len(PROMPTS)])], params):
            if chunk.text and first is None:
                first = time.perf_counter()
            if chunk.finish_reason:
                tokens = chunk.completion_tokens
        end = time.perf_counter()
        res.ttft.append((first or end) - t0)
        res.tokens += tokens
        if first and end > first:
            res.per_stream_tps.append(max(tokens - 1, 1) / (end - first))

    async def worker(w: int) -> None:
        for r in range(per_client):
            await one(w * per_client + r)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(n)))
    res.wall = time.perf_counter() - t0
    return res


def start_gateway(data_dir: Path, port: int, guards: bool, extra: dict[str, str] | None = None) -> subprocess.Popen:
    env = dict(
        os.environ,
        CARAFE_DATA_DIR=str(data_dir),
        CARAFE_SERVER__PORT=str(port),
        CARAFE_MODELS_CACHE=os.environ.get("CARAFE_TEST_MODELS", str(REPO / ".carafe" / "models")),
        CARAFE_GUARDS__ENABLED=str(guards).lower(),
        **(extra or {}),
    )
    env.setdefault("CARAFE_TELEMETRY__EXPORTER", "none")
    return subprocess.Popen(
        [sys.executable, "-m", "carafe.cli.main", "serve", "--log-level", "warning"], env=env, cwd=str(data_dir)
    )


def wait_ready(url: str, proc: subprocess.Popen | None, timeout: float = 600, path: str = "/readyz") -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the gateway exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("the gateway did not become ready")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for h in header:
        t.add_column(h, justify="right")
    for r in rows:
        t.add_row(*r)
    Console(width=max(120, Console().width)).print(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="an already running gateway (default: start one)")
    ap.add_argument("--key", help="API key for --url")
    ap.add_argument("--concurrency", default="1,4,8")
    ap.add_argument("--requests", type=int, default=4, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="2 requests per client, 24 tokens")
    ap.add_argument(
        "--backend",
        choices=["local", "vllm"],
        default="local",
        help="vllm: Carafe and LiteLLM's proxy in front of one real vLLM (defaults: 1,4 clients, "
        "3 rounds of 4 requests, 8 tokens)",
    )
    ap.add_argument("--vllm-url", help="a running vLLM OpenAI server (default: start one, scripts/vllm-env)")
    ap.add_argument("--litellm", help="the litellm proxy binary (default: $CARAFE_LITELLM_VENV/bin/litellm)")
    ap.add_argument("--rounds", type=int, default=3, help="--backend vllm: alternating rounds over the paths")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.max_tokens = 2, 24
    if args.backend == "vllm":
        from bench.serve_vllm import main_vllm

        if args.concurrency == "1,4,8":
            args.concurrency = "1,4"
        if args.max_tokens == 32:
            args.max_tokens = 8
        main_vllm(args)
        return
    levels = [int(x) for x in args.concurrency.split(",")]
    model = "SmolLM2-135M-Instruct"

    # The gateway twice: guards off (the serving path itself, the overhead goal) and the
    # default policy (input checks before the engine, output released sentence by sentence).
    runs: dict[str, dict[int, Result]] = {}
    rss: dict[str, float] = {}
    tmp = tempfile.TemporaryDirectory(prefix="carafe-bench-")
    for setup in ("no guards", "default guards"):
        proc = None
        if args.url:
            url, key = args.url.rstrip("/"), args.key
            setup = "running gateway"
        else:
            from carafe.gateway.auth import KeyStore
            from tests.servers import free_port

            port = free_port()
            url = f"http://127.0.0.1:{port}"
            data = Path(tmp.name) / setup.replace(" ", "-")
            key, _ = KeyStore.open(data).create("bench", rpm=1_000_000)
            proc = start_gateway(data, port, guards=setup == "default guards")
        try:
            wait_ready(url, proc)
            asyncio.run(gateway_load(url, key, model, 2, 1, 4))  # warm-up
            runs[setup] = {
                n: asyncio.run(gateway_load(url, key, model, n, args.requests, args.max_tokens)) for n in levels
            }
            rss[setup] = peak_rss_mb(proc.pid) if proc else float("nan")
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
        if args.url:
            break

    from carafe.adapters import create_engine
    from carafe.adapters.config import EngineConfig

    engine = create_engine(EngineConfig(), Path(os.environ.get("CARAFE_TEST_MODELS", REPO / ".carafe" / "models")))

    async def direct() -> dict[int, Result]:
        await engine.start()
        await engine_load(engine, 2, 1, 4)  # warm-up
        out = {n: await engine_load(engine, n, args.requests, args.max_tokens) for n in levels}
        await engine.close()
        return out

    eng = asyncio.run(direct())
    tmp.cleanup()

    header = ["path", "clients", "TTFT p50 ms", "TTFT p99 ms", "tok/s per stream", "tok/s total", "failed"]
    rows = []
    for n in levels:
        for setup, gw in runs.items():
            rows.append(gw[n].row(f"gateway, {setup}", n))
        rows.append(eng[n].row("engine", n))
    print_table(f"Streaming load: {args.requests} requests per client, {args.max_tokens} tokens each", header, rows)

    orow = []
    for setup, gw in runs.items():
        for n in levels:
            o = gw[n].overhead_ms
            diff = (pct(gw[n].ttft, 50) - pct(eng[n].ttft, 50)) * 1000
            orow.append([setup, str(n), f"{pct(o, 50):.2f}", f"{pct(o, 99):.2f}", f"{diff:.1f}"])
    print_table(
        "Gateway overhead per request (x-carafe-overhead-duration-ms: gateway time, engine time excluded)",
        ["gateway", "clients", "reported p50 ms", "reported p99 ms", "TTFT gateway-engine p50 ms"],
        orow,
    )
    for setup, gw in runs.items():
        all_over = [v for n in levels for v in gw[n].overhead_ms]
        single = gw[levels[0]].tokens / gw[levels[0]].wall
        top = gw[levels[-1]].tokens / gw[levels[-1]].wall
        print(
            f"{setup}: overhead p50 {pct(all_over, 50):.2f} ms, p99 {pct(all_over, 99):.2f} ms "
            f"(goal: p50 <= 2 ms, p99 <= 10 ms); total tok/s at {levels[-1]} vs {levels[0]} clients "
            f"{top / single:.2f}x (goal >= 3x); peak RSS {rss[setup]:.0f} MB (goal <= 1536 MB)"
        )
    e_single = eng[levels[0]].tokens / eng[levels[0]].wall
    e_top = eng[levels[-1]].tokens / eng[levels[-1]].wall
    print(f"engine alone: total tok/s at {levels[-1]} vs {levels[0]} clients {e_top / e_single:.2f}x")


if __name__ == "__main__":
    main()
