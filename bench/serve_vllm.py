"""``bench/serve.py --backend vllm``: the gateway's overhead in front of a real vLLM,
next to LiteLLM's proxy in front of the same vLLM, in one run.

    python bench/serve.py --backend vllm                       # starts vLLM CPU itself
    python bench/serve.py --backend vllm --vllm-url http://127.0.0.1:8001

Three paths, the same streaming load (openai SDK, one prompt set, ``ignore_eos``):
straight on vLLM; Carafe (``adapters.engine.backend: vllm``, guards off) in front;
LiteLLM's proxy (``model: openai/<name>`` with ``api_base``) in front. They run
in alternating rounds so that a noisy machine hits all three alike. Overhead =
a path's TTFT minus vLLM's own, per concurrency (p50 of each); Carafe also
reports its own time per request (``x-carafe-overhead-duration-ms``). Goal:
Carafe's p50 overhead <= half of LiteLLM's.

LiteLLM runs from its own environment (``pip install 'litellm[proxy]'`` into
``CARAFE_LITELLM_VENV``, default ``.carafe/litellm-venv``), never the project's.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
from argparse import Namespace
from pathlib import Path

from bench.serve import (
    REPO,
    Result,
    gateway_load,
    pct,
    peak_rss_mb,
    print_table,
    start_gateway,
    wait_ready,
)

MODEL = "SmolLM2-135M-Instruct"
LITELLM_KEY = "sk-bench-litellm"


def litellm_binary(given: str | None) -> Path:
    path = (
        Path(given)
        if given
        else Path(os.environ.get("CARAFE_LITELLM_VENV", REPO / ".carafe" / "litellm-venv")) / "bin" / "litellm"
    )
    if not path.is_file():
        raise SystemExit(
            f"LiteLLM not found at {path}: python3 -m venv .carafe/litellm-venv && "
            ".carafe/litellm-venv/bin/pip install 'litellm[proxy]' (or pass --litellm)"
        )
    return path


def start_litellm(binary: Path, vllm_url: str, port: int, folder: Path) -> subprocess.Popen:
    config = folder / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {vllm_url}/v1\n"
        "      api_key: none\n"
        f"general_settings:\n  master_key: {LITELLM_KEY}\n"
        "litellm_settings:\n  telemetry: false\n"
    )
    env = dict(os.environ, LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False")
    return subprocess.Popen(
        [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        env=env,
        cwd=str(folder),
        stdout=open(folder / "litellm.log", "ab"),
        stderr=subprocess.STDOUT,
    )


def main_vllm(args: Namespace) -> None:
    from carafe.gateway.auth import KeyStore
    from tests.servers import free_port
    from tests.vllm.launch import start_for_bench

    levels = [int(x) for x in args.concurrency.split(",")]
    server = None if args.vllm_url else start_for_bench()
    vllm_url = (args.vllm_url or server.url).rstrip("/")
    tmp = tempfile.TemporaryDirectory(prefix="carafe-bench-vllm-")
    folder = Path(tmp.name)
    procs: list[subprocess.Popen] = []
    try:
        key, _ = KeyStore.open(folder).create("bench", rpm=1_000_000)
        gw_port, ll_port = free_port(), free_port()
        gateway = start_gateway(
            folder,
            gw_port,
            guards=False,
            extra={"CARAFE_ADAPTERS__ENGINE__BACKEND": "vllm", "CARAFE_ADAPTERS__ENGINE__VLLM_URL": vllm_url},
        )
        litellm = start_litellm(litellm_binary(args.litellm), vllm_url, ll_port, folder)
        procs += [gateway, litellm]
        paths = {
            "vLLM direct": (vllm_url, "none"),
            "Carafe -> vLLM": (f"http://127.0.0.1:{gw_port}", key),
            "LiteLLM -> vLLM": (f"http://127.0.0.1:{ll_port}", LITELLM_KEY),
        }
        wait_ready(paths["Carafe -> vLLM"][0], gateway)
        wait_ready(paths["LiteLLM -> vLLM"][0], litellm, path="/health/liveliness")
        for url, k in paths.values():  # warm-up
            asyncio.run(gateway_load(url, k, MODEL, 2, 1, 4))
        runs: dict[str, dict[int, Result]] = {p: {n: Result() for n in levels} for p in paths}
        for _ in range(args.rounds):
            for n in levels:
                for name, (url, k) in paths.items():
                    merge(runs[name][n], asyncio.run(gateway_load(url, k, MODEL, n, args.requests, args.max_tokens)))
        rss = {"Carafe -> vLLM": peak_rss_mb(gateway.pid), "LiteLLM -> vLLM": peak_rss_mb(litellm.pid)}
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        if server is not None:
            server.stop()
        tmp.cleanup()
    report(runs, levels, rss, args)


def merge(into: Result, more: Result) -> None:
    into.ttft += more.ttft
    into.overhead_ms += more.overhead_ms
    into.per_stream_tps += more.per_stream_tps
    into.tokens += more.tokens
    into.wall += more.wall
    into.failed += more.failed


def report(runs: dict[str, dict[int, Result]], levels: list[int], rss: dict[str, float], args: Namespace) -> None:
    header = ["path", "clients", "TTFT p50 ms", "TTFT p99 ms", "tok/s per stream", "tok/s total", "failed"]
    rows = [runs[p][n].row(p, n) for n in levels for p in runs]
    print_table(
        f"Streaming load on one vLLM: {args.rounds} rounds x {args.requests} requests per client, "
        f"{args.max_tokens} tokens each",
        header,
        rows,
    )
    direct = runs["vLLM direct"]
    orow, p50s = [], {}
    for proxy in ("Carafe -> vLLM", "LiteLLM -> vLLM"):
        for n in levels:
            diff = (pct(runs[proxy][n].ttft, 50) - pct(direct[n].ttft, 50)) * 1000
            p50s.setdefault(proxy, []).append(diff)
            rep = runs[proxy][n].overhead_ms
            orow.append(
                [
                    proxy,
                    str(n),
                    f"{diff:.1f}",
                    f"{(pct(runs[proxy][n].ttft, 99) - pct(direct[n].ttft, 99)) * 1000:.1f}",
                    f"{pct(rep, 50):.2f}" if proxy.startswith("Carafe") else "-",
                    f"{rss[proxy]:.0f}",
                ]
            )
    print_table(
        "Proxy overhead over vLLM direct (TTFT difference; Carafe also reports its own time)",
        ["proxy", "clients", "TTFT p50 diff ms", "TTFT p99 diff ms", "reported p50 ms", "peak RSS MB"],
        orow,
    )
    for i, n in enumerate(levels):
        carafe, lite = p50s["Carafe -> vLLM"][i], p50s["LiteLLM -> vLLM"][i]
        verdict = "met" if lite > 0 and carafe <= lite / 2 else "NOT met"
        print(
            f"{n} client(s): p50 overhead Carafe {carafe:.1f} ms, LiteLLM {lite:.1f} ms; "
            f"goal Carafe <= half of LiteLLM's: {verdict}"
        )
    print("note: the machine is shared with other engineers' CPU work; all three paths ran in alternating rounds")
