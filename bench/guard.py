"""Guardrail benchmark: recall, false-positive rate and latency per check on
the labelled evaluation sets shipped in ``carafe/guards/data``, the
whole input pipeline's latency, and the streaming guard's added delay.
The injection check is measured twice, side by side: in-source (Carafe's own
evaluation set, close to its training set) and cross-source (public corpora
from other authors that no classifier here was trained on), so overfitting shows.

    python bench/guard.py [--quick] [--threads N] [--cross-only]

Baselines measured in the same run: one bare MiniLM encode (the floor of any
embedding check), the pipeline with guards disabled, and the fp32 MiniLM beside the
default int8 one. Numbers are noisy when
other work shares the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from carafe.guards import GuardPipeline, GuardsConfig
from carafe.guards.classifier import data_path, load_jsonl


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def row(name: str, recall: float | None, fpr: float | None, lat: list[float], n: int) -> str:
    r = "   -  " if recall is None else f"{recall:6.3f}"
    f = "   -  " if fpr is None else f"{fpr:6.3f}"
    return f"{name:<34} {n:>5} {r} {f} {pct(lat, 50):8.2f} {pct(lat, 99):8.2f}"


async def eval_check(
    guards: GuardPipeline, check: str, rows: list[dict], fired_if=None
) -> tuple[float, float, list[float]]:
    """Run one check (default policy settings) on labelled rows."""
    settings = guards.policy(None).input[check]
    tp = fp = pos = neg = 0
    lat: list[float] = []
    for r in rows:
        subject = guards.subject(r["text"], "input", guards.policy(None))
        start = time.perf_counter()
        verdict = await guards.checks[check].check(subject, settings)
        lat.append((time.perf_counter() - start) * 1000)
        hit = fired_if(verdict, r) if fired_if else verdict.flagged
        if r["label"]:
            pos += 1
            tp += hit
        else:
            neg += 1
            fp += bool(verdict.flagged)
    return tp / max(pos, 1), fp / max(neg, 1), lat


def _rates(fired: list[bool], rows: list[dict]) -> tuple[float, float]:
    pos = [f for f, r in zip(fired, rows) if r["label"]]
    neg = [f for f, r in zip(fired, rows) if not r["label"]]
    return sum(pos) / max(len(pos), 1), sum(neg) / max(len(neg), 1)


async def verdicts(check, settings, guards: GuardPipeline, rows: list[dict]) -> tuple[list[bool], list[float]]:
    """Whether `check` fires on each row (None: the rule families alone), and its latency."""
    from carafe.guards.checks.injection_rules import match_rules

    fired, lat = [], []
    for r in rows:
        subject = guards.subject(r["text"], "input", guards.policy(None))
        start = time.perf_counter()
        hit = (
            match_rules(subject.normalized) is not None
            if check is None
            else (await check.check(subject, settings)).flagged
        )
        lat.append((time.perf_counter() - start) * 1000)
        fired.append(bool(hit))
    return fired, lat


async def cross_source(guards: GuardPipeline, embedder, quick: bool) -> None:
    """In-source vs cross-source figures of the injection check, per classifier, then per held-out source."""
    from carafe.guards.checks.injection import InjectionCheck
    from carafe.guards.classifier import NgramClassifier, fit, training_key
    from carafe.guards.config import CheckSettings
    from carafe.guards.corpora import HELD_OUT_ATTACKS, HELD_OUT_BENIGN, corpus

    own = load_jsonl(data_path("injection_train.jsonl"))
    before = InjectionCheck(
        embedder.model_id, kind="embedding"
    )  # what shipped before: Carafe's own set, C=4, threshold 0.7
    before.rows, before._clf = own, fit(own, embedder, training_key(own, embedder.model_id), c=4.0)
    own_ngram = InjectionCheck(embedder.model_id, kind="ngram")
    own_ngram.rows, own_ngram._ngram = own, NgramClassifier.fit(own)
    default = guards.checks["injection"]
    policy = guards.policy(None).input["injection"]
    at = lambda t: CheckSettings(action="block", threshold=t)  # noqa: E731 - each kind at its bench/guard_select.py threshold
    variants = [
        ("rules only", None, None),
        ("rules + MiniLM, own set (before, 0.7)", before, at(0.7)),
        ("rules + n-gram, own set (0.7)", own_ngram, at(0.7)),
        ("rules + MiniLM, all train sources (0.9)", InjectionCheck(embedder.model_id, kind="embedding"), at(0.9)),
        ("rules + ensemble, all train sources (0.7)", InjectionCheck(embedder.model_id, kind="ensemble"), at(0.7)),
        (f"rules + n-gram (default, {policy.threshold})", default, policy),
    ]
    in_rows = load_jsonl(data_path("injection_eval.jsonl"))
    sources = {s: corpus(s) for s in HELD_OUT_ATTACKS + HELD_OUT_BENIGN}
    if quick:
        in_rows, sources = in_rows[::3], {k: v[::2] for k, v in sources.items()}
    cross = [r for rows in sources.values() for r in rows]
    n_att = sum(r["label"] for r in cross)
    print(
        f"\ninjection: in-source = Carafe's eval set ({len(in_rows)}); cross-source = {len(HELD_OUT_ATTACKS)} "
        f"held-out attack "
        f"corpora ({n_att}) + {len(HELD_OUT_BENIGN)} held-out benign sets ({len(cross) - n_att}), never trained on"
    )
    print(
        f"{'classifier':<40} {'in recall':>9} {'in FPR':>7} {'x recall':>9} {'x FPR':>7} {'x p50 ms':>9} "
        f"{'x p99 ms':>9}"
    )
    print("-" * 96)
    per_source: dict[str, float] = {}
    for name, check, settings in variants:
        fired_in, _ = await verdicts(check, settings, guards, in_rows)
        fired_x, lat = await verdicts(check, settings, guards, cross)
        (r_in, f_in), (r_x, f_x) = _rates(fired_in, in_rows), _rates(fired_x, cross)
        print(f"{name:<40} {r_in:9.3f} {f_in:7.3f} {r_x:9.3f} {f_x:7.3f} {pct(lat, 50):9.2f} {pct(lat, 99):9.2f}")
        if settings is policy:
            i = 0
            for src, rows in sources.items():
                per_source[src] = sum(fired_x[i : i + len(rows)]) / len(rows)
                i += len(rows)
    print("default check per held-out source (attacks: recall; benign: false-positive rate)")
    for src, rate in per_source.items():
        kind = "recall" if src in HELD_OUT_ATTACKS else "FPR"
        print(f"  {src:<32} {len(sources[src]):>4}  {kind:<6} {rate:.3f}")
    texts = [r["text"] for r in cross]
    print(row("ALL input checks, cross-source texts", None, None, await input_pipeline(guards, texts), len(texts)))
    short = [t for t in texts if len(t) <= 300]
    print(row("ALL input checks, those <= 300 chars", None, None, await input_pipeline(guards, short), len(short)))
    long = [t for t in texts if len(t) > 300]
    print(row("ALL input checks, those > 300 chars", None, None, await input_pipeline(guards, long), len(long)))


async def input_pipeline(guards: GuardPipeline, texts: list[str]) -> list[float]:
    lat = []
    for t in texts:
        start = time.perf_counter()
        await guards.check_input(t)
        lat.append((time.perf_counter() - start) * 1000)
    return lat


async def grounding(guards: GuardPipeline, rows: list[dict]) -> tuple[float, float, list[float]]:
    """Unsupported sentences flagged (recall) and supported ones flagged (FPR), default policy."""
    from carafe.guards.checks.grounding import PassageIndex

    settings = guards.policy(None).output["grounding"]
    tp = fp = 0
    lat: list[float] = []
    for r in rows:
        index = PassageIndex([r["passage"]], guards.embedder)
        await index.embeddings()  # passages are embedded once per answer, not per sentence
        subject = guards.subject(r["text"], "output", guards.policy(None), passage_index=index)
        start = time.perf_counter()
        verdict = await guards.checks["grounding"].check(subject, settings)
        lat.append((time.perf_counter() - start) * 1000)
        tp += r["label"] and verdict.flagged
        fp += (not r["label"]) and verdict.flagged
    pos = sum(r["label"] for r in rows)
    return tp / pos, fp / (len(rows) - pos), lat


ANSWERS = [
    (
        "Employees receive 30 days of paid vacation per year. Requests go through the HR portal at least two weeks "
        "ahead. "
        "Unused days can be carried over until March. Contact hr@example.com if the portal is down. Have a nice day!",
        [
            "Employees receive 30 days of paid vacation per year. Vacation requests are filed in the HR portal two "
            "weeks ahead. "
            "Up to five unused days carry over until the end of March."
        ],
    ),
    (
        "The VPN client is installed from the software center. After installing, sign in with your company account. "
        "If the connection fails, restart the client and check your token. The help desk can reset tokens on request.",
        [
            "Install the VPN client from the software center and sign in with your company account. Help desk resets "
            "tokens."
        ],
    ),
    (
        "Expense reports are due by the fifth working day of the month. Receipts must be attached as PDF or photos. "
        "Meals with clients are reimbursed up to 60 euros per person. Late reports are paid in the next cycle.",
        ["Expense reports are due on the fifth working day. Attach receipts. Client meals: up to 60 euros per person."],
    ),
]


async def streaming(guards: GuardPipeline, rounds: int, delta_chars: int = 4) -> dict[str, float]:
    """Feed answers in small deltas (like tokens); measure how far release lags generation.

    A sentence is *complete* once its stop and the following space were
    generated; its delay is the time from the feed that completed it to the
    feed that released it, and the lag counts complete-but-unreleased sentences.
    """
    from carafe.guards.stream import _BOUNDARY

    feed_ms: list[float] = []
    sentence_ms: list[float] = []
    lag_sentences: list[int] = []
    finish_ms: list[float] = []
    for _ in range(rounds):
        for answer, passages in ANSWERS:
            stream = guards.output_stream(passages=passages)
            released_text = ""
            completed_at: list[float] = []
            released_n = 0
            for i in range(0, len(answer), delta_chars):
                generated = answer[: i + delta_chars]
                start = time.perf_counter()
                for _ in range(len(_BOUNDARY.findall(generated)) - len(completed_at)):
                    completed_at.append(start)
                rel = await stream.feed(answer[i : i + delta_chars])
                end = time.perf_counter()
                feed_ms.append((end - start) * 1000)
                released_text += rel.text
                now_released = len(_BOUNDARY.findall(released_text))
                sentence_ms += [(end - t) * 1000 for t in completed_at[released_n:now_released]]
                released_n = now_released
                lag_sentences.append(len(completed_at) - released_n)
            start = time.perf_counter()
            await stream.finish()
            finish_ms.append((time.perf_counter() - start) * 1000)
    return {
        "feed_p50": pct(feed_ms, 50),
        "feed_p99": pct(feed_ms, 99),
        "finish_p50": pct(finish_ms, 50),
        "sentence_p50": pct(sentence_ms, 50),
        "sentence_p99": pct(sentence_ms, 99),
        "max_lag_sentences": max(lag_sentences),
        "feeds": len(feed_ms),
        "sentences": len(sentence_ms),
    }


async def main(quick: bool, cross_only: bool = False) -> None:
    from carafe.indexer.embedding import Embedder

    t0 = time.perf_counter()
    embedder = Embedder(quantize=True)  # the gateway's default (indexer.embedding.quantize: true)
    guards = GuardPipeline.from_config(GuardsConfig(cache_dir=""), embedder=embedder)  # the default: n-gram injection
    off = GuardPipeline.from_config(GuardsConfig(enabled=False, cache_dir=""), embedder=embedder)
    mini = GuardPipeline.from_config(GuardsConfig(injection_classifier="embedding", cache_dir=""), embedder=embedder)
    fp32 = GuardPipeline.from_config(GuardsConfig(injection_classifier="embedding", cache_dir=""), embedder=Embedder())
    print(f"set-up (MiniLM load + pipeline): {time.perf_counter() - t0:.2f} s")

    if cross_only:
        await guards.check_input("warm up the pipeline")
        await cross_source(guards, embedder, quick)
        return
    inj = load_jsonl(data_path("injection_eval.jsonl"))
    pii = load_jsonl(data_path("pii_eval.jsonl"))
    tox = load_jsonl(data_path("toxicity_eval.jsonl"))
    if quick:
        inj, pii, tox = inj[::3], pii[::3], tox[::3]
    embedder.encode(["warm up"])
    await guards.check_input("warm up the pipeline")
    await mini.check_input("warm up the pipeline")
    await fp32.check_input("warm up the pipeline")

    # Baseline: one bare encode per text, and the pipeline with guards disabled.
    bare = []
    for r in inj:
        start = time.perf_counter()
        embedder.encode([r["text"]])
        bare.append((time.perf_counter() - start) * 1000)

    def pii_hit(verdict, r):
        found = set(verdict.category.split(","))
        return set(r["types"]) <= found

    print(f"\n{'check (eval set)':<34} {'n':>5} {'recall':>6} {'FPR':>6} {'p50 ms':>8} {'p99 ms':>8}")
    print("-" * 72)
    rec, fpr, lat = await eval_check(mini, "injection", inj)
    print(row("injection (rules + MiniLM int8)", rec, fpr, lat, len(inj)))
    rec, fpr, lat = await eval_check(fp32, "injection", inj)
    print(row("injection (rules + MiniLM fp32)", rec, fpr, lat, len(inj)))
    rec, fpr, lat = await eval_check(guards, "injection", inj)
    print(row("injection (rules + n-gram, default)", rec, fpr, lat, len(inj)))
    rec, fpr, lat = await eval_check(guards, "pii", pii, pii_hit)
    print(row("pii (structured types)", rec, fpr, lat, len(pii)))
    rec, fpr, lat = await eval_check(guards, "toxicity", tox)
    print(row("toxicity", rec, fpr, lat, len(tox)))
    ground = load_jsonl(data_path("grounding_eval.jsonl"))
    rec, fpr, lat = await grounding(guards, ground[::3] if quick else ground)
    print(row("grounding (output, per sentence)", rec, fpr, lat, len(ground[::3] if quick else ground)))
    texts = [r["text"] for r in inj + pii + tox]
    print(row("ALL input checks (default, n-gram)", None, None, await input_pipeline(guards, texts), len(texts)))
    print(row("ALL input checks (MiniLM int8)", None, None, await input_pipeline(mini, texts), len(texts)))
    print(row("ALL input checks (MiniLM fp32)", None, None, await input_pipeline(fp32, texts), len(texts)))
    print(row("baseline: guards disabled", None, None, await input_pipeline(off, texts), len(texts)))
    print(row("baseline: one bare MiniLM int8 encode", None, None, bare, len(bare)))

    await cross_source(guards, embedder, quick)

    s = await streaming(guards, 1 if quick else 3)
    print("\nstreaming output guard (answers fed in 4-char deltas, default policy, with passages)")
    print(f"  feed() p50 {s['feed_p50']:.2f} ms   p99 {s['feed_p99']:.2f} ms   over {s['feeds']} feeds")
    print(f"  finish() p50 {s['finish_p50']:.2f} ms (remainder + whole-answer grounding)")
    print(
        f"  added delay per completed sentence: p50 {s['sentence_p50']:.2f} ms  p99 {s['sentence_p99']:.2f} ms "
        f"over {s['sentences']} sentences (checks run on the sentence, then it is released)"
    )
    print(
        f"  completed sentences held back after a feed returns: max {s['max_lag_sentences']} "
        f"(text is held only while its sentence is in progress: at most 1 sentence of delay)"
    )
    print("  baseline without guard: every delta passes at once (0 ms, 0 sentences)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a third of the items, one streaming round")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    parser.add_argument(
        "--cross-only", action="store_true", help="only the in-source vs cross-source injection figures"
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    asyncio.run(main(args.quick, args.cross_only))
