"""Multi-phase LoRA training: phase mix with replay, a loadable PEFT adapter, resume after interruption."""

from __future__ import annotations

import pytest

from carafe.tuning.config import PhaseConfig, TrainingConfig
from carafe.tuning.train import TrainingInvalid, phase_mix, train
from tests.conftest import MODELS_CACHE


def _sample(q: str, a: str, phase: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "phase": phase}


SAMPLES = [_sample(f"Days in plan {i}?", f"Plan {i}: {20 + i} days.", "knowledge") for i in range(4)] + [
    _sample(f"Can I do {i}?", f"Yes. Regards, HR {i}", "skills") for i in range(4)
]


def _tiny(**phase: object) -> TrainingConfig:
    p = dict(
        rank=4,
        alpha=8,
        dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        epochs=1,
        learning_rate=1e-3,
        batch_size=2,
        max_seq_len=48,
        general_share=0.0,
        **phase,
    )
    return TrainingConfig(
        knowledge=PhaseConfig(**p),
        skills=PhaseConfig(**{**p, "replay_share": 0.5}),
        seed=1,
        save_every_steps=100,
        device="cpu",
    )


def test_phase_mix_replays_earlier_data_and_general_instructions():
    cfg = TrainingConfig()
    mix = phase_mix(SAMPLES, cfg)
    assert list(mix) == ["knowledge", "skills"]
    sources = [s["source"] for s in mix["skills"]]
    assert (
        sources.count("own") == 4
        and sources.count("replay") == round(0.3 * 4)
        and sources.count("general") == round(0.2 * 4)
    )
    replayed = [s for s in mix["skills"] if s["source"] == "replay"]
    assert all(s["phase"] == "knowledge" for s in replayed)
    assert "replay" not in [s["source"] for s in phase_mix(SAMPLES, cfg, replay=False)["skills"]]
    assert phase_mix(SAMPLES, cfg) == mix  # deterministic with the seed


def test_phases_must_share_the_adapter_shape(tmp_path):
    cfg = _tiny()
    cfg.skills.rank = 8
    with pytest.raises(TrainingInvalid, match="rank"):
        train(SAMPLES, cfg, MODELS_CACHE, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # three short trainings; slow only when the shared CPU is crowded
def test_training_resumes_and_produces_a_loadable_peft_adapter(tmp_path):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    from carafe.tuning.base_model import load_base

    cfg = _tiny()
    stats = train(SAMPLES, cfg, MODELS_CACHE, tmp_path / "whole")
    assert [s.name for s in stats] == ["knowledge", "skills"]
    assert stats[0].steps == 2 and stats[1].steps == 3 and all(s.tokens > 0 for s in stats)  # 4/2 and (4+2)/2 batches
    adapter = tmp_path / "whole" / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in adapter.iterdir()}

    # Interrupted after 3 steps (inside the skills phase), then resumed: the same adapter as a whole run.
    train(SAMPLES, cfg, MODELS_CACHE, tmp_path / "cut", max_steps=3)
    assert (tmp_path / "cut" / "checkpoint" / "state.json").is_file()
    train(SAMPLES, cfg, MODELS_CACHE, tmp_path / "cut")
    assert not (tmp_path / "cut" / "checkpoint").exists()
    whole, resumed = (
        load_file(adapter / "adapter_model.safetensors"),
        load_file(tmp_path / "cut" / "adapter" / "adapter_model.safetensors"),
    )
    assert whole.keys() == resumed.keys()
    assert all(torch.allclose(whole[k], resumed[k], atol=1e-5) for k in whole)

    base, tok, _ = load_base(MODELS_CACHE)
    ids = tok("Days in plan 2?", return_tensors="pt").input_ids
    with torch.no_grad():
        before = base(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(base, str(adapter))
        after = tuned(input_ids=ids).logits
    assert not torch.allclose(before, after, atol=1e-4)
