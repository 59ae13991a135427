"""Tuning benchmark: the whole pipeline on examples/taxonomy, on this machine.

    python bench/tune.py            # the example as `carafe tune run` does it
    python bench/tune.py --quick    # fewer samples and one epoch per phase

The teacher is the rule-based stand-in served over a real local OpenAI-compatible HTTP
server (no large teacher runs here). Prints the wall time of each stage, samples
generated/kept per leaf, training tokens/s per phase, the evaluation table (base vs
adapter vs the same training without replay) on held-out recipe questions, and
forgetting (general-text perplexity, general questions), plus peak RSS. Timings are
noisy when other work shares the CPU.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _serve_teacher() -> tuple[str, object]:
    import uvicorn

    from carafe.tuning.template_teacher import teacher_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(teacher_app("good"), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}/v1", server


def _timed(label: str, times: dict[str, float], fn):
    t0 = time.perf_counter()
    out = fn()
    times[label] = time.perf_counter() - t0
    print(f"  {label:<22} {times[label]:8.1f} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples, one epoch per phase")
    ap.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    ap.add_argument("--models", type=Path, default=REPO / ".carafe" / "models", help="converted base model cache")
    args = ap.parse_args()

    from carafe.cli.tune import near_dup_encoder
    from carafe.tuning.config import TeacherConfig, TuningConfig
    from carafe.tuning.pipeline import Workspace, eval_stage, generate_stage, publish_stage, train_stage

    url, server = _serve_teacher()
    cfg = TuningConfig(teacher=TeacherConfig(endpoint=url, concurrency=8))
    if args.quick:
        cfg.generation.qa_per_chunk, cfg.generation.instructions_per_seed = 3, 5
        cfg.training.knowledge.epochs = cfg.training.skills.epochs = 1
        cfg.eval_max_new_tokens = 48
    cfg.gate.enforce = False  # the bench reports the gate; it publishes either way
    out = args.out or Path(tempfile.mkdtemp(prefix="carafe-bench-tune-"))
    ws = Workspace(cfg, REPO / "examples" / "taxonomy", out, args.models, out / "registry")
    print(
        f"bench/tune.py {'--quick ' if args.quick else ''}work folder {out}; cores: {os.cpu_count()} "
        "(shared with other work: timings are noisy)\n\nstage wall times:"
    )
    times: dict[str, float] = {}
    recipes = _timed("validate", times, ws.recipes)
    gen = _timed("generate", times, lambda: generate_stage(ws, recipes, force=True, encode=near_dup_encoder(ws)))
    tr = _timed("train (replay)", times, lambda: train_stage(ws, force=True))
    ev = _timed("eval (replay)", times, lambda: eval_stage(ws, recipes, force=True))
    tr0 = _timed("train (no replay)", times, lambda: train_stage(ws, force=True, replay=False, folder="train-noreplay"))
    ev0 = _timed("eval (no replay)", times, lambda: eval_stage(ws, recipes, force=True, folder="train-noreplay"))
    pub = _timed("publish", times, lambda: publish_stage(ws, recipes, force=True))
    server.should_exit = True  # type: ignore[attr-defined]
    total = sum(times.values())
    print(
        f"  {'total (one run)':<22} {total - times['train (no replay)'] - times['eval (no replay)']:8.1f} s "
        "(validate+generate+train+eval+publish)"
    )

    print("\nsamples per leaf:")
    print(f"  {'leaf':<38} {'generated':>9} {'format fail':>11} {'dropped':>8} {'kept':>5}")
    for r in gen["reports"]:
        print(
            f"  {r['leaf']:<38} {r['generated']:>9} {r['format_failures']:>11} {sum(r['dropped'].values()):>8} "
            f"{r['kept']:>5}"
            f"   {dict(r['dropped'])}"
        )
    print(f"  training samples (incl. seeds, RAFT): {gen['samples']}  {gen['by_phase']}")

    print("\ntraining:")
    for label, t in (("replay", tr), ("no replay", tr0)):
        for p in t["phases"]:
            print(
                f"  {label:<10} {p['name']:<10} samples {p['samples']}  steps {p['steps']:>3}  tokens "
                f"{p['tokens']:>6}  "
                f"{p['tokens_per_s']:>6.1f} tokens/s  final loss {p['final_loss']:.3f}"
            )

    base, ad, ad0 = ev["metrics"]["base"], ev["metrics"]["adapter"], ev0["metrics"]["adapter"]
    print("\nevaluation (held-out recipe questions; forgetting on general text/questions):")
    print(f"  {'metric':<18} {'base':>8} {'adapter':>8} {'no-replay':>10}")
    for k in base:
        print(f"  {k:<18} {base[k]:>8.3f} {ad.get(k, float('nan')):>8.3f} {ad0.get(k, float('nan')):>10.3f}")
    inc, inc0 = ad["perplexity"] / base["perplexity"] - 1, ad0["perplexity"] / base["perplexity"] - 1
    print(f"  perplexity increase vs base: adapter {inc:+.1%}, no-replay {inc0:+.1%} (goal <= +5%)")
    if "style_adherence" in ad:
        print(
            f"  style adherence: adapter {ad['style_adherence']:.0%} vs base {base['style_adherence']:.0%} (goal >= "
            f"80%)"
        )
    if "fact_recall" in ad:
        print(f"  knowledge fact recall: adapter {ad['fact_recall']:.2f} vs base {base['fact_recall']:.2f}")
    print(f"  gate: {'passed' if ev['gate']['passed'] else 'failed: ' + '; '.join(ev['gate']['failed'])}")
    print(f"\npublished {pub['ref']} into {pub['registry']}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    for item in ev["items"]:
        if item["kind"] != "general":
            print(
                f"\n  Q [{item['kind']}] {item['question']}\n    base:    {item['base'][:160]!r}\n    adapter: "
                f"{item['adapter'][:160]!r}"
            )


if __name__ == "__main__":
    main()
