"""Gathered mixed-adapter LoRA: the same logits as PEFT's per-adapter loop, any mix of ranks and targets."""

from __future__ import annotations

import pytest
import torch

from carafe.adapters import gathered
from tests.lora import _base_config, make_lora


@pytest.fixture(scope="module")
def peft_model(tmp_path_factory):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("gathered")
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(_base_config()).eval()
    model = PeftModel.from_pretrained(base, str(make_lora(root / "a", rank=4, seed=1)), adapter_name="a")
    model.load_adapter(str(make_lora(root / "b", rank=8, seed=2)), adapter_name="b")
    model.load_adapter(str(make_lora(root / "c", rank=2, seed=3, targets=("v_proj", "o_proj"))), adapter_name="c")
    return model.eval()


def _logits(model, names: list[str], ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, adapter_names=names).logits


@pytest.mark.parametrize("names", [["a", "b", "c", "__base__"], ["b", "b", "a", "a"], ["c", "__base__", "c", "b"]])
def test_same_logits_as_peft_for_prefill_and_decode(peft_model, names):
    torch.manual_seed(5)
    prefill = torch.randint(0, 1000, (4, 7))
    decode = torch.randint(0, 1000, (4, 1))
    gathered.uninstall(peft_model)  # PEFT's own loop first
    want = [_logits(peft_model, names, prefill), _logits(peft_model, names, decode)]
    assert gathered.install(peft_model) > 0
    got = [_logits(peft_model, names, prefill), _logits(peft_model, names, decode)]
    for w, g in zip(want, got):
        assert torch.allclose(w, g, atol=1e-4), (w - g).abs().max()
    # row 0 runs an adapter, so it must differ from the base model (else the test proves nothing)
    assert not torch.allclose(got[0][0], _logits(peft_model, ["__base__"] * 4, prefill)[0], atol=1e-3)


def test_stacks_follow_the_adapter_set_and_are_dropped_on_clear(peft_model):
    gathered.install(peft_model)
    ids = torch.randint(0, 1000, (2, 3))
    _logits(peft_model, ["a", "b"], ids)
    cached = [m.__dict__["_carafe_gathered"][0] for m in peft_model.modules() if "_carafe_gathered" in m.__dict__]
    assert cached and all(names in {("a", "b"), ("b",)} for names in cached)  # o_proj layers hold no a/b: not cached
    gathered.clear(peft_model)
    assert not any("_carafe_gathered" in m.__dict__ for m in peft_model.modules())
