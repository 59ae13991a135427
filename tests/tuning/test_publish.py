"""Publishing into the adapter registry: a new version with the full manifest; the gate can refuse."""

from __future__ import annotations

import json

import pytest

from carafe.adapters.registry import Registry
from carafe.tuning.base_model import base_ref
from carafe.tuning.config import TuningConfig
from carafe.tuning.errors import GateFailed
from carafe.tuning.pipeline import Workspace, publish_stage
from carafe.tuning.validate import validate_taxonomy
from tests.lora import make_lora
from tests.tuning.taxo import copy_example

METRICS = {
    "base": {"rougeL": 0.1, "style_adherence": 0.0, "perplexity": 10.0},
    "adapter": {"rougeL": 0.6, "style_adherence": 1.0, "perplexity": 10.2},
}


@pytest.fixture
def workspace(tmp_path):
    """A workspace whose stages have run (data, adapter and eval files as the stages write them)."""
    taxonomy = copy_example(tmp_path)
    ws = Workspace(TuningConfig(), taxonomy, tmp_path / "tuning", tmp_path / "models", tmp_path / "registry")
    (ws.out / "data").mkdir(parents=True)
    (ws.out / "data" / "train.jsonl").write_text('{"messages": []}\n')
    ws.write_stamp(
        "data", {"input": "x", "data_sha256": "ab" * 32, "samples": 1, "bytes": 17, "teacher": "teacher@http://t/v1"}
    )
    make_lora(ws.out / "train" / "adapter", rank=4)
    ws.write_stamp(
        "train",
        {
            "input": "y",
            "replay": True,
            "phases": [
                {"name": "knowledge", "hyperparameters": {"rank": 4, "epochs": 2}},
                {"name": "skills", "hyperparameters": {"rank": 4, "epochs": 2}},
            ],
        },
    )
    (ws.out / "eval").mkdir()
    (ws.out / "eval" / "train.json").write_text(json.dumps({"metrics": METRICS}))
    return ws


def test_publish_writes_a_new_version_with_the_full_manifest(workspace):
    recipes = validate_taxonomy(workspace.taxonomy).recipes
    first = publish_stage(workspace, recipes)
    assert first["ref"] == "hr-desk@1"
    folder = workspace.registry_dir / "hr-desk" / "versions" / "1"
    assert {"adapter_config.json", "adapter_model.safetensors", "manifest.json"} <= {p.name for p in folder.iterdir()}
    m = json.loads((folder / "manifest.json").read_text())
    assert m["name"] == "hr-desk" and m["version"] == 1 and m["kind"] == "style" and "HR" in m["description"]
    assert m["base_model"] == {"id": "SmolLM2-135M-Instruct", "digest": base_ref().digest}
    assert m["base_model"]["digest"].startswith("sha256:") and len(m["base_model"]["digest"]) == 71
    assert {r["path"]: r["sha256"] for r in m["recipes"]} == {f"{r.leaf}/qna.yaml": r.sha256 for r in recipes}
    assert m["data"] == {"sha256": "ab" * 32, "size": 1} and m["teacher"] == "teacher@http://t/v1"
    assert m["hyperparameters"]["knowledge"]["rank"] == 4 and m["hyperparameters"]["replay"] is True
    assert m["metrics"]["adapter"]["rougeL"] == 0.6 and m["metrics"]["gate"]["passed"] is True
    assert m["created_at"]

    second = publish_stage(workspace, recipes)
    assert second["version"] == 2
    assert Registry(workspace.registry_dir).channels("hr-desk").stable == 1  # promotion stays an admin act


def test_gate_refuses_to_publish_unless_forced(workspace):
    bad = {"base": METRICS["base"], "adapter": {**METRICS["adapter"], "perplexity": 20.0}}
    (workspace.out / "eval" / "train.json").write_text(json.dumps({"metrics": bad}))
    recipes = validate_taxonomy(workspace.taxonomy).recipes
    with pytest.raises(GateFailed, match="perplexity"):
        publish_stage(workspace, recipes)
    assert not (workspace.registry_dir / "hr-desk").exists()
    assert publish_stage(workspace, recipes, force=True)["version"] == 1
