"""`carafe adapters` on a real registry folder: the commands, their JSON, the
actor recorded, and clear failures."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carafe.adapters.manifest import BaseModelRef
from carafe.adapters.registry import Registry
from carafe.cli.main import app
from tests.conftest import MODELS_CACHE
from tests.lora import make_lora

runner = CliRunner()
BASE = BaseModelRef(id="SmolLM2-135M-Instruct", digest="sha256:" + "c" * 64)


@pytest.fixture(scope="module")
def lora_src(tmp_path_factory) -> Path:
    return make_lora(tmp_path_factory.mktemp("lora") / "support", rank=4, seed=2)


@pytest.fixture
def cfg_file(tmp_path) -> Path:
    path = tmp_path / "carafe.yaml"
    path.write_text(f"data_dir: {tmp_path / 'data'}\n")
    Registry(tmp_path / "data" / "registry").record_base(BASE)  # as a gateway start does
    return path


def cli(cfg: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["adapters", *args, "--config", str(cfg)])
    return result.exit_code, result.output


def test_add_promote_split_rollback_show_list(cfg_file, lora_src):
    code, out = cli(cfg_file, "add", str(lora_src), "--description", "customer support tone", "--json")
    assert code == 0, out
    assert json.loads(out)["ref"] == "support@1"
    assert cli(cfg_file, "add", str(lora_src), "--json")[0] == 0
    code, out = cli(cfg_file, "promote", "support", "2", "--json")
    assert code == 0 and json.loads(out)["stable"] == 2
    code, out = cli(cfg_file, "split", "support", "--canary", "1", "--weight", "10", "--json")
    assert (json.loads(out)["canary"], json.loads(out)["canary_weight"]) == (1, 10)
    code, out = cli(cfg_file, "rollback", "support", "--json")
    assert json.loads(out)["stable"] == 1
    code, out = cli(cfg_file, "show", "support", "--json")
    detail = json.loads(out)
    assert detail["manifests"]["1"]["description"] == "customer support tone"
    assert {e["actor"] for e in detail["history"]} == {getpass.getuser()}
    assert [e["action"] for e in detail["history"]][-3:] == ["promote", "split", "rollback"]
    code, out = cli(cfg_file, "list")
    assert code == 0 and "support" in out and "1 (10%)" in out

    # every change is also a span in the audit trail (reads are not)
    trail = cfg_file.parent / "data" / "traces" / "traces.jsonl"
    spans = [json.loads(line) for line in trail.read_text().splitlines()]
    assert [s["name"].rsplit(".", 1)[1] for s in spans] == ["add", "add", "promote", "split", "rollback"]
    assert {s["attributes"]["carafe.principal"] for s in spans} == {getpass.getuser()}
    promote = spans[2]["attributes"]
    assert (promote["carafe.adapter.name"], promote["carafe.adapter.version"]) == ("support", "support@2")
    assert spans[3]["attributes"]["carafe.adapter.canary_weight"] == 10
    audited = runner.invoke(app, ["audit", "--adapter", "support", "--json", "--config", str(cfg_file)])
    assert audited.exit_code == 0, audited.output
    assert [r["name"] for r in json.loads(audited.output)][-3:] == [
        "carafe.admin.adapters.promote",
        "carafe.admin.adapters.split",
        "carafe.admin.adapters.rollback",
    ]


def flat(out: str) -> str:
    return " ".join(out.split())  # rich wraps long messages


def test_failures_name_the_problem(cfg_file, lora_src, tmp_path):
    code, out = cli(cfg_file, "add", str(tmp_path / "missing"))
    out = flat(out)
    assert code == 1 and "is not a directory" in out
    cli(cfg_file, "add", str(lora_src))
    code, out = cli(cfg_file, "promote", "support", "9")
    out = flat(out)
    assert code == 1 and "has no version 9" in out
    trail = cfg_file.parent / "data" / "traces" / "traces.jsonl"
    failed = [json.loads(line) for line in trail.read_text().splitlines()][-1]
    assert failed["name"] == "carafe.admin.adapters.promote" and failed["status"]["code"] == "ERROR"
    code, out = cli(cfg_file, "show", "nope")
    out = flat(out)
    assert code == 1 and "no adapter named 'nope'" in out


def test_add_refuses_nan_weights_and_rank_mismatch(cfg_file, lora_src, tmp_path):
    from tests.adapters.test_registry import poisoned, rank_mismatched

    code, out = cli(cfg_file, "add", str(poisoned(lora_src, tmp_path / "nan")), "--name", "nan")
    assert code == 1 and "adapter_model.safetensors:tensor" in "".join(out.split()) and "1 NaN" in flat(out)
    bad, key = rank_mismatched(lora_src, tmp_path / "mm")
    code, out = cli(cfg_file, "add", str(bad), "--name", "mm")
    assert code == 1 and "rank_mismatch" not in out and key in "".join(out.split())
    assert cli(cfg_file, "list", "--json")[1].strip() == "[]"


def test_add_needs_a_known_base(tmp_path, lora_src):
    cfg = tmp_path / "c.yaml"  # a vLLM backend: only a running gateway can tell the base's digest
    cfg.write_text(f"data_dir: {tmp_path / 'fresh'}\nadapters: {{engine: {{backend: vllm}}}}\n")
    code, out = cli(cfg, "add", str(lora_src))
    out = flat(out)
    assert code == 1 and "start the gateway once" in out


def test_add_learns_the_embedded_base_without_a_gateway(tmp_path, lora_src):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'fresh'}\nmodels_cache: {MODELS_CACHE}\n")
    code, out = cli(cfg, "add", str(lora_src), "--json")
    assert code == 0, out
    assert json.loads(out)["manifest"]["base_model"]["id"] == "SmolLM2-135M-Instruct"
