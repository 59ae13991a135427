"""Multi-phase LoRA training (knowledge, then skills), with replay, as LAB does.

One LoRA adapter is trained through the phases; each later phase mixes in a share of the
earlier phases' data and of a general instruction set, against catastrophic forgetting.
Checkpoints are written every few steps and a rerun resumes from the last one; the data
order, LoRA init and dropout follow the seed, so a run is reproducible.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from carafe.errors import InvalidInput
from carafe.tuning.base_model import load_base, pick_device
from carafe.tuning.config import PhaseConfig, TrainingConfig
from carafe.tuning.errors import StageMissing, TuningError

PHASES = ("knowledge", "skills")
OnStep = Callable[["StepInfo"], None]


class TrainingInvalid(InvalidInput, TuningError):
    """The phases' settings cannot train one adapter."""


@dataclass
class StepInfo:
    phase: str
    step: int
    total: int
    loss: float
    tokens_per_s: float


@dataclass
class PhaseStats:
    name: str
    samples: dict[str, int]
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    final_loss: float = 0.0
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def general_instructions() -> list[dict[str, Any]]:
    """The small general instruction set shipped with Carafe (replayed against forgetting)."""
    text = resources.files("carafe.tuning").joinpath("data/general.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def phase_mix(samples: list[dict], cfg: TrainingConfig, *, replay: bool = True) -> dict[str, list[dict]]:
    """The data of each phase: its own samples + replay of earlier phases + general instructions."""
    rng = random.Random(cfg.seed)
    general = general_instructions()
    mixes: dict[str, list[dict]] = {}
    earlier: list[dict] = []
    for name in PHASES:
        own = [s for s in samples if s.get("phase") == name]
        if not own:
            continue
        pc: PhaseConfig = getattr(cfg, name)
        mix = [dict(s, source="own") for s in own]
        if replay and earlier and pc.replay_share > 0:
            k = min(len(earlier), round(pc.replay_share * len(own)))
            mix += [dict(s, source="replay") for s in rng.sample(earlier, k)]
        if replay and pc.general_share > 0:
            k = min(len(general), round(pc.general_share * len(own)))
            mix += [dict(s, source="general") for s in rng.sample(general, k)]
        mixes[name] = mix
        earlier += own
    return mixes


def encode(sample: dict, tokenizer: Any, max_len: int) -> tuple[list[int], list[int]]:
    """Token ids and labels; only the assistant's answer is learned (prompt tokens are -100)."""
    msgs = sample["messages"]
    prompt = tokenizer.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=True, return_dict=False)
    full = tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=False)
    ids = list(full)[:max_len]
    labels = [-100] * min(len(prompt), len(ids)) + ids[len(prompt) :]
    return ids, labels[: len(ids)]


def _batches(lengths: list[int], size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled batches of similar lengths (less padding on CPU), deterministic per seed and epoch."""
    rng = random.Random(f"{seed}/{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = size * 8
    batches = []
    for i in range(0, len(order), pool):
        group = sorted(order[i : i + pool], key=lambda j: lengths[j])
        batches += [group[k : k + size] for k in range(0, len(group), size)]
    rng.shuffle(batches)
    return batches


def use_bf16(precision: str, device: Any) -> bool:
    """bf16 autocast: asked for, or `auto` on a CPU with native bf16 (AVX512-BF16, AMX) or a bf16 GPU."""
    import torch

    if precision != "auto":
        return precision == "bf16"
    if str(device).startswith("cuda"):
        return bool(torch.cuda.is_bf16_supported())
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def _run_key(samples: list[dict], cfg: TrainingConfig, replay: bool) -> str:
    blob = json.dumps([samples, cfg.model_dump(mode="json"), replay], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def train(
    samples: list[dict],
    cfg: TrainingConfig,
    models_dir: Path,
    out: Path,
    *,
    replay: bool = True,
    on_step: OnStep | None = None,
    max_steps: int | None = None,
) -> list[PhaseStats]:
    """Train the adapter into ``out/adapter``; resume from ``out/checkpoint`` when it matches.

    ``max_steps`` stops after that many steps as an interruption would: the checkpoint is
    kept, so the next call resumes there.
    """
    import torch
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    if not samples:
        raise StageMissing("no training data: run `carafe tune generate` first")
    first, second = cfg.knowledge, cfg.skills
    if (first.rank, first.alpha, first.target_modules) != (second.rank, second.alpha, second.target_modules):
        raise TrainingInvalid(
            "all phases train one adapter: knowledge and skills must share rank, alpha and target_modules"
        )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    bf16 = use_bf16(cfg.precision, device)
    model, tok, _ = load_base(models_dir, device, cfg.base_model)
    lora = LoraConfig(
        r=first.rank,
        lora_alpha=first.alpha,
        lora_dropout=first.dropout,
        target_modules=list(first.target_modules),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    mixes = phase_mix(samples, cfg, replay=replay)
    key = _run_key(samples, cfg, replay)
    ckpt = out / "checkpoint"
    state = _load_state(ckpt, key)
    if state is not None:
        set_peft_model_state_dict(model, load_file(str(ckpt / "adapter_model.safetensors")))
    stats: list[PhaseStats] = []
    step_budget = max_steps
    interrupted = False
    for name, mix in mixes.items():
        pc: PhaseConfig = getattr(cfg, name)
        st = PhaseStats(
            name,
            {src: sum(s["source"] == src for s in mix) for src in ("own", "replay", "general")},
            hyperparameters={**pc.model_dump(mode="json"), "precision": "bf16" if bf16 else "fp32"},
        )
        encoded = [encode(s, tok, pc.max_seq_len) for s in mix]
        epochs = max(1, round(pc.epochs))
        lengths = [len(ids) for ids, _ in encoded]
        plan = [b for e in range(epochs) for b in _batches(lengths, pc.batch_size, cfg.seed, e)]
        opt = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=pc.learning_rate, weight_decay=0.0
        )

        def warmup_then_decay(s: int, n: int = len(plan)) -> float:
            return min(1.0, (s + 1) / max(1, n // 10)) * max(0.1, 1 - s / n)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_then_decay)
        start = 0
        if state is not None and state["phase"] == name and state["step"] > 0:
            opt.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
            sched.load_state_dict(state["scheduler"])
            start, st.tokens, st.seconds = state["step"], state["tokens"], state["seconds"]
        elif state is not None and PHASES.index(state["phase"]) > PHASES.index(name):
            stats.append(PhaseStats(**{**state["done"][name], "hyperparameters": pc.model_dump(mode="json")}))
            continue  # this phase finished before the interruption

        model.train()
        for i in range(start, len(plan)):
            if step_budget is not None and step_budget <= 0:
                interrupted = True
                _save_state(model, opt, ckpt, _resume_state(key, name, i, st, sched, stats))
                break
            t0 = time.perf_counter()
            loss, ntok = _step(model, [encoded[j] for j in plan[i]], tok.pad_token_id, device, bf16)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            st.seconds += time.perf_counter() - t0
            st.tokens += ntok
            st.steps, st.final_loss = i + 1, loss
            if step_budget is not None:
                step_budget -= 1
            if on_step:
                on_step(StepInfo(name, i + 1, len(plan), loss, st.tokens_per_s))
            if (i + 1) % cfg.save_every_steps == 0 and i + 1 < len(plan):
                _save_state(model, opt, ckpt, _resume_state(key, name, i + 1, st, sched, stats))
        st.steps = max(st.steps, start)
        stats.append(st)
        state = None
        if interrupted:
            break
        nxt = [n for n in mixes if PHASES.index(n) > PHASES.index(name)]
        if nxt:  # phase boundary: a rerun starts at the next phase
            _save_state(
                model,
                opt,
                ckpt,
                {
                    "key": key,
                    "phase": nxt[0],
                    "step": 0,
                    "tokens": 0,
                    "seconds": 0.0,
                    "scheduler": None,
                    "done": {s.name: _stats_dict(s) for s in stats},
                },
                optimizer=False,
            )
    model.eval()
    adapter = out / "adapter"
    if adapter.exists():
        shutil.rmtree(adapter)
    model.save_pretrained(str(adapter))
    (out / "training.json").write_text(
        json.dumps(
            {
                "key": key,
                "replay": replay,
                "phases": [{**_stats_dict(s), "tokens_per_s": round(s.tokens_per_s, 1)} for s in stats],
            },
            indent=2,
        )
    )
    if not interrupted:
        shutil.rmtree(ckpt, ignore_errors=True)
    return stats


def _stats_dict(s: PhaseStats) -> dict[str, Any]:
    d = asdict(s)
    d.pop("hyperparameters")
    return d


def _resume_state(
    key: str, phase: str, step: int, st: PhaseStats, sched: Any, done: list[PhaseStats]
) -> dict[str, Any]:
    """The checkpoint's state that resumes ``phase`` at ``step``."""
    return {
        "key": key,
        "phase": phase,
        "step": step,
        "tokens": st.tokens,
        "seconds": st.seconds,
        "scheduler": sched.state_dict(),
        "done": {s.name: _stats_dict(s) for s in done},
    }


def _step(
    model: Any, batch: list[tuple[list[int], list[int]]], pad: int, device: Any, bf16: bool = False
) -> tuple[float, int]:
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, (x, y) in enumerate(batch):
        ids[r, : len(x)] = torch.tensor(x)
        labels[r, : len(y)] = torch.tensor(y)
        mask[r, : len(x)] = 1
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    with torch.autocast(kind, dtype=torch.bfloat16, enabled=bf16):
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device))
    out.loss.backward()
    return float(out.loss.detach()), int(mask.sum())


def _save_state(model: Any, opt: Any, ckpt: Path, state: dict, optimizer: bool = True) -> None:
    import torch

    tmp = ckpt.with_name(ckpt.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if optimizer:
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(state))
    shutil.rmtree(ckpt, ignore_errors=True)
    tmp.rename(ckpt)


def _load_state(ckpt: Path, key: str) -> dict | None:
    path = ckpt / "state.json"
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    return state if state.get("key") == key else None
