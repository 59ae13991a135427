"""The registry on a real folder with real PEFT adapters: versions, channels,
history, and the refusals `carafe adapters add` promises."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

import carafe.adapters.registry as registry_module
from carafe.adapters.errors import AdapterConflict, AdapterNotFound, InvalidAdapter
from carafe.adapters.manifest import BaseModelRef, Manifest, content_digest
from carafe.adapters.registry import Registry
from tests.lora import make_lora

BASE = BaseModelRef(id="SmolLM2-135M-Instruct", digest="sha256:" + "a" * 64)


@pytest.fixture(scope="module")
def lora_src(tmp_path_factory) -> Path:
    return make_lora(tmp_path_factory.mktemp("lora") / "hr-style", rank=8, seed=1)


@pytest.fixture
def registry(tmp_path) -> Registry:
    return Registry(tmp_path / "registry", base=BASE, max_rank=16)


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_add_copies_in_with_manifest_and_first_version_is_stable(registry, lora_src):
    av = registry.add(lora_src, actor="alice", description="HR tone")
    assert (av.name, av.version, av.ref) == ("hr-style", 1, "hr-style@1")
    assert av.path == registry.root / "hr-style" / "versions" / "1"
    assert (av.path / "adapter_model.safetensors").is_file()
    saved = Manifest.model_validate_json((av.path / "manifest.json").read_text())
    assert saved.base_model == BASE and saved.rank == 8 and saved.description == "HR tone"
    assert saved.adapter_digest == content_digest(lora_src)
    assert registry.channels("hr-style").stable == 1
    actions = [(e["actor"], e["action"]) for e in registry.history("hr-style")]
    assert actions == [("alice", "add"), ("alice", "promote")]


def test_versions_count_up_and_later_versions_wait_for_promote(registry, lora_src):
    registry.add(lora_src, actor="a")
    v2 = registry.add(lora_src, actor="a")
    assert v2.version == 2 and registry.versions("hr-style") == [1, 2]
    assert registry.channels("hr-style").stable == 1
    with pytest.raises(AdapterConflict, match="immutable"):
        registry.add(lora_src, actor="a", version=2)


def test_promote_rollback_split_and_history(registry, lora_src):
    for _ in range(3):
        registry.add(lora_src, actor="a")
    registry.promote("hr-style", 2, actor="bob")
    registry.promote("hr-style", 3, actor="bob")
    assert registry.channels("hr-style").stable == 3
    ch = registry.rollback("hr-style", actor="carol")
    assert ch.stable == 2 and ch.previous == [1]
    ch = registry.split("hr-style", 3, 10, actor="dave")
    assert (ch.canary, ch.canary_weight) == (3, 10)
    registry.promote("hr-style", 3, actor="erin")  # promoting the canary ends the split
    ch = registry.channels("hr-style")
    assert (ch.stable, ch.canary, ch.canary_weight) == (3, None, 0)
    last = registry.history("hr-style")[-1]
    assert last["actor"] == "erin" and last["action"] == "promote" and last["version"] == 3 and last["at"]
    registry.promote("hr-style", 1, actor="f", channel="beta")
    assert registry.channels("hr-style").named == {"beta": 1}


def test_promote_to_missing_version_is_404_and_changes_nothing(registry, lora_src):
    registry.add(lora_src, actor="a")
    before = (registry.root / "hr-style" / "channels.json").read_text()
    n_history = len(registry.history("hr-style"))
    with pytest.raises(AdapterNotFound, match="no version 7"):
        registry.promote("hr-style", 7, actor="a")
    with pytest.raises(AdapterNotFound):
        registry.promote("nope", 1, actor="a")
    assert (registry.root / "hr-style" / "channels.json").read_text() == before
    assert len(registry.history("hr-style")) == n_history


def test_rollback_without_previous_is_a_conflict(registry, lora_src):
    registry.add(lora_src, actor="a")
    with pytest.raises(AdapterConflict, match="no previous stable"):
        registry.rollback("hr-style", actor="a")


def test_remove_version_on_channel_is_refused_and_whole_adapter_keeps_history(registry, lora_src):
    registry.add(lora_src, actor="a")
    registry.add(lora_src, actor="a")
    with pytest.raises(AdapterConflict, match="on a channel"):
        registry.remove("hr-style", version=1, actor="a")
    registry.remove("hr-style", version=2, actor="a")
    assert registry.versions("hr-style") == [1]
    registry.remove("hr-style", actor="zoe")
    assert registry.names() == []
    removed = next((registry.root / ".removed").iterdir())
    assert json.loads((removed / "history.jsonl").read_text().splitlines()[-1])["actor"] == "zoe"


def test_corrupted_version_is_detected_before_promote(registry, lora_src):
    registry.add(lora_src, actor="a")
    v2 = registry.add(lora_src, actor="a")
    weights = v2.path / "adapter_model.safetensors"
    os.chmod(weights, 0o644)
    data = bytearray(weights.read_bytes())
    data[-10:] = b"\x00" * 10
    weights.write_bytes(bytes(data))
    with pytest.raises(InvalidAdapter, match="corrupted"):
        registry.promote("hr-style", 2, actor="a")
    assert registry.channels("hr-style").stable == 1


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("no_config", "adapter_config.json is missing"),
        ("not_lora", "not a LoRA adapter"),
        ("truncated", "truncated or corrupted"),
        ("bin_only", "adapter_model.safetensors is missing"),
    ],
)
def test_add_refuses_invalid_peft_dirs(registry, lora_src, tmp_path, breakage, message):
    bad = copy_of(lora_src, tmp_path / "bad")
    if breakage == "no_config":
        (bad / "adapter_config.json").unlink()
    elif breakage == "not_lora":
        cfg = json.loads((bad / "adapter_config.json").read_text())
        (bad / "adapter_config.json").write_text(json.dumps({**cfg, "peft_type": "PROMPT_TUNING"}))
    elif breakage == "truncated":
        w = bad / "adapter_model.safetensors"
        w.write_bytes(w.read_bytes()[:-100])
    else:
        (bad / "adapter_model.safetensors").rename(bad / "adapter_model.bin")
    with pytest.raises(InvalidAdapter, match=message):
        registry.add(bad, actor="a", name="bad")
    assert registry.names() == []


def test_add_refuses_rank_over_limit(tmp_path, lora_src):
    small = Registry(tmp_path / "r", base=BASE, max_rank=4)
    with pytest.raises(InvalidAdapter, match="rank 8, over the engine's limit of 4"):
        small.add(lora_src, actor="a")


def test_add_refuses_symlinks_out_of_the_folder(registry, lora_src, tmp_path):
    bad = copy_of(lora_src, tmp_path / "evil")
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    (bad / "notes.txt").symlink_to(secret)
    with pytest.raises(InvalidAdapter, match="points outside the adapter folder"):
        registry.add(bad, actor="a")
    dotdot = copy_of(lora_src, tmp_path / "dotdot")
    (dotdot / "adapter_model.safetensors").unlink()
    (dotdot / "adapter_model.safetensors").symlink_to(Path("..") / "evil" / "adapter_model.safetensors")
    with pytest.raises(InvalidAdapter, match="points outside"):
        registry.add(dotdot, actor="a")
    assert registry.names() == []


def test_add_refuses_names_that_escape(registry, lora_src):
    for name in ("../up", "a/b", "x@1", ""):
        with pytest.raises(InvalidAdapter, match="invalid adapter name"):
            registry.add(lora_src, actor="a", name=name or "..")


def test_add_refuses_a_different_base_model(registry, lora_src, tmp_path):
    other = copy_of(lora_src, tmp_path / "other")
    manifest = Manifest(
        name="other",
        base_model=BaseModelRef(id="Llama-3-8B", digest="sha256:" + "b" * 64),
        kind="skill",
        description="x",
    )
    (other / "manifest.json").write_text(manifest.model_dump_json())
    with pytest.raises(InvalidAdapter, match="trained on base model 'Llama-3-8B'.*serves 'SmolLM2-135M-Instruct'"):
        registry.add(other, actor="a")


def test_manifest_from_tuning_is_kept(registry, lora_src, tmp_path):
    src = copy_of(lora_src, tmp_path / "tuned")
    manifest = Manifest(
        name="policies",
        base_model=BASE,
        kind="knowledge",
        description="company policies",
        teacher="smollm2",
        hyperparameters={"knowledge": {"lr": 1e-4}},
        metrics={"mmlu": 0.3},
    )
    (src / "manifest.json").write_text(manifest.model_dump_json())
    av = registry.add(src, actor="tuning")
    assert av.ref == "policies@1"
    assert av.manifest.kind == "knowledge" and av.manifest.hyperparameters == {"knowledge": {"lr": 1e-4}}


def test_concurrent_writers_never_lose_a_version(tmp_path, lora_src):
    root = tmp_path / "registry"
    errors: list[Exception] = []

    def writer() -> None:
        try:
            Registry(root, base=BASE, max_rank=16).add(lora_src, actor="w")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    reg = Registry(root, base=BASE)
    assert reg.versions("hr-style") == [1, 2, 3, 4]
    assert sorted(e["version"] for e in reg.history("hr-style") if e["action"] == "add") == [1, 2, 3, 4]


# what a diverged or hand-edited training run leaves (issue 29: H1, H2) ----------------------
def poisoned(src: Path, dst: Path, value: float = float("nan")) -> Path:
    """A copy of ``src`` with one lora_B weight set to ``value`` (NaN: a diverged run)."""
    from safetensors.torch import load_file, save_file

    bad = copy_of(src, dst)
    tensors = load_file(str(bad / "adapter_model.safetensors"))
    key = sorted(k for k in tensors if ".lora_B." in k)[0]
    tensors[key][0, 0] = value
    save_file(tensors, str(bad / "adapter_model.safetensors"), metadata={"format": "pt"})
    return bad


def rank_mismatched(src: Path, dst: Path) -> tuple[Path, str]:
    """A copy of ``src`` whose first lora_B has rank r+2 while its lora_A keeps r; the B key."""
    import torch
    from safetensors.torch import load_file, save_file

    bad = copy_of(src, dst)
    tensors = load_file(str(bad / "adapter_model.safetensors"))
    key = sorted(k for k in tensors if ".lora_B." in k)[0]
    out, rank = tensors[key].shape
    tensors[key] = torch.zeros(out, rank + 2)
    save_file(tensors, str(bad / "adapter_model.safetensors"), metadata={"format": "pt"})
    return bad, key


@pytest.mark.parametrize("value, what", [(float("nan"), "1 NaN"), (float("inf"), "1 Inf")])
def test_add_refuses_non_finite_weights_naming_file_and_tensor(registry, lora_src, tmp_path, value, what):
    bad = poisoned(lora_src, tmp_path / "diverged", value)
    with pytest.raises(InvalidAdapter, match=rf"adapter_model.safetensors: tensor .*lora_B.* holds .*{what}") as err:
        registry.add(bad, actor="a", name="diverged")
    assert err.value.code == "non_finite_weights" and str(bad) in err.value.message
    assert registry.names() == []  # never added, so never stable


def test_add_refuses_a_lora_b_whose_rank_is_not_lora_a_s(registry, lora_src, tmp_path):
    bad, key = rank_mismatched(lora_src, tmp_path / "mismatch")
    with pytest.raises(InvalidAdapter, match="rank") as err:
        registry.add(bad, actor="a", name="mismatch")
    assert err.value.code == "rank_mismatch" and key in err.value.message and str(bad) in err.value.message
    assert registry.names() == []


def test_add_refuses_ranks_that_disagree_with_adapter_config(registry, lora_src, tmp_path):
    bad = copy_of(lora_src, tmp_path / "config-lies")
    cfg = json.loads((bad / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps({**cfg, "r": 4}))
    with pytest.raises(InvalidAdapter, match="declares r=4"):
        registry.add(bad, actor="a", name="lies")


def test_add_refuses_shapes_the_base_model_does_not_have(tmp_path, lora_src, base_model_dir):
    import torch
    from safetensors.torch import load_file, save_file

    reg = Registry(tmp_path / "r", base=BASE, max_rank=16)
    reg.record_base(BASE, base_model_dir)  # what the gateway does at start: shapes from the base's safetensors
    bad = copy_of(lora_src, tmp_path / "other-model")
    tensors = load_file(str(bad / "adapter_model.safetensors"))
    key = sorted(k for k in tensors if ".lora_A." in k)[0]
    tensors[key] = torch.zeros(tensors[key].shape[0], 100)  # in-features 100: trained for another model
    save_file(tensors, str(bad / "adapter_model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InvalidAdapter, match=r"do not fit .* of SmolLM2-135M-Instruct \(576 in"):
        reg.add(bad, actor="a", name="other")
    assert Registry(tmp_path / "r").linears == reg.linears  # the CLI reads them back from base.json
    assert reg.add(lora_src, actor="a").version == 1


def test_add_checks_the_source_before_copying_anything(registry, lora_src, tmp_path, monkeypatch):
    copies: list[Path] = []
    real_copy = registry_module.copy_tree_inside
    monkeypatch.setattr(
        registry_module, "copy_tree_inside", lambda s, t, **kw: copies.append(s) or real_copy(s, t, **kw)
    )
    with pytest.raises(InvalidAdapter, match="NaN"):
        registry.add(poisoned(lora_src, tmp_path / "nan"), actor="a", name="nan")
    with pytest.raises(InvalidAdapter, match="rank"):
        registry.add(rank_mismatched(lora_src, tmp_path / "mm")[0], actor="a", name="mm")
    big = copy_of(lora_src, tmp_path / "home")
    for i in range(70):  # a home folder, not an adapter folder
        (big / f"file{i}.txt").write_text("x")
    with pytest.raises(InvalidAdapter, match="over the limits") as err:
        registry.add(big, actor="a", name="home")
    assert err.value.code == "adapter_too_large"
    huge = copy_of(lora_src, tmp_path / "huge")
    with (huge / "blob.bin").open("wb") as fh:
        fh.truncate(3 * 1024**3)  # sparse: costs nothing here, 3 GB in a registry
    with pytest.raises(InvalidAdapter, match="over the limits"):
        registry.add(huge, actor="a", name="huge")
    assert copies == [] and not list(registry.root.glob(".staging-*"))
    registry.add(lora_src, actor="a")
    assert len(copies) == 1


def test_rank_pattern_and_bf16_weights_are_read_as_peft_writes_them(registry, lora_src, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    src = copy_of(lora_src, tmp_path / "mixed")
    tensors = load_file(str(src / "adapter_model.safetensors"))
    for key in [k for k in tensors if ".v_proj.lora_" in k]:  # v_proj at rank 4, the rest at r=8
        t = tensors[key]
        tensors[key] = t[:4].clone() if ".lora_A." in key else t[:, :4].clone()
    tensors = {k: v.to(torch.bfloat16) for k, v in tensors.items()}
    save_file(tensors, str(src / "adapter_model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InvalidAdapter, match="declares r=8 for .*v_proj"):
        registry.add(src, actor="a", name="mixed")
    cfg = json.loads((src / "adapter_config.json").read_text())
    (src / "adapter_config.json").write_text(json.dumps({**cfg, "rank_pattern": {"v_proj": 4}}))
    assert registry.add(src, actor="a", name="mixed").manifest.rank == 8
    key = sorted(k for k in tensors if ".lora_B." in k)[-1]
    tensors[key][0, 0] = float("-inf")
    save_file(tensors, str(src / "adapter_model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InvalidAdapter, match=r"0 NaN and 1 Inf"):
        registry.add(src, actor="a", name="mixed")
