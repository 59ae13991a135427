"""Fail before the work (issue 30, item 6): what publish needs is checked by `carafe taxonomy validate`
and before `carafe tune run` generates anything; leaf sidecar keys are honoured or refused with file, key, fix."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from carafe.adapters.manifest import BaseModelRef
from carafe.adapters.registry import Registry
from carafe.cli.main import app
from carafe.tuning.config import TuningConfig
from carafe.tuning.errors import RecipeInvalid
from carafe.tuning.pipeline import Workspace
from carafe.tuning.preflight import identity, sidecar_issues
from carafe.tuning.recipe import read_sidecar
from carafe.tuning.validate import validate_taxonomy
from tests.tuning.taxo import copy_example

KNOWLEDGE = "knowledge/acme/benefits"


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("CARAFE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CARAFE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _leaf_named(tmp_path):
    """The issue's case: the name is in a leaf's carafe.adapter.yaml, not at the taxonomy root."""
    taxonomy = copy_example(tmp_path)
    (taxonomy / "carafe.adapter.yaml").unlink()
    (taxonomy / "compositional_skills/hr/desk_style/carafe.adapter.yaml").unlink()
    side = taxonomy / KNOWLEDGE / "carafe.adapter.yaml"
    side.write_text("adapter: acme-facts\n" + side.read_text())
    return taxonomy


def test_a_leaf_sidecar_adapter_name_is_honoured(env):
    taxonomy = _leaf_named(env)
    recipes = validate_taxonomy(taxonomy).recipes
    assert sidecar_issues(taxonomy, recipes) == []
    assert identity(read_sidecar(taxonomy), recipes, None).name == "acme-facts"  # what publish will use
    result = CliRunner().invoke(app, ["taxonomy", "validate", str(taxonomy)])
    assert result.exit_code == 0, result.output


def test_no_adapter_name_fails_validate_and_run_before_generation(env):
    taxonomy = _leaf_named(env)
    side = taxonomy / KNOWLEDGE / "carafe.adapter.yaml"
    side.write_text(side.read_text().replace("adapter: acme-facts\n", ""))
    result = CliRunner().invoke(app, ["taxonomy", "validate", str(taxonomy), "--json"])
    assert result.exit_code == 1 and '"sidecar.adapter"' in result.output and "or pass --name" in result.output
    result = CliRunner().invoke(app, ["tune", "run", "--taxonomy", str(taxonomy), "--teacher", "template"])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "the adapter has no name" in said and "would stop publish" in said
    assert not (env / "data" / "tuning" / "generate").exists()  # nothing was generated
    assert CliRunner().invoke(app, ["taxonomy", "validate", str(taxonomy), "--name", "x"]).exit_code == 0


def test_ignored_or_conflicting_sidecar_keys_name_file_key_and_fix(env):
    taxonomy = copy_example(env)
    side = taxonomy / KNOWLEDGE / "carafe.adapter.yaml"
    side.write_text(side.read_text() + 'signoff: "Regards"\nadapter: other-name\n')
    issues = sidecar_issues(taxonomy, validate_taxonomy(taxonomy).recipes)
    by_key = {i.rule: i for i in issues}
    assert set(by_key) == {"sidecar.signoff", "sidecar.adapter"}
    assert by_key["sidecar.signoff"].file == str(side) and by_key["sidecar.signoff"].line == 3
    assert "add `kind: style`" in by_key["sidecar.signoff"].hint
    assert "'other-name'" in by_key["sidecar.adapter"].message and "'hr-desk'" in by_key["sidecar.adapter"].message
    (taxonomy / "carafe.adapter.yaml").write_text("adapter: hr-desk\nsignoff: Bye\n")
    assert any(i.file == str(taxonomy / "carafe.adapter.yaml") for i in sidecar_issues(taxonomy, []))


def test_a_base_the_registry_does_not_serve_is_refused_before_the_work(env):
    taxonomy = copy_example(env)
    registry = env / "registry"
    Registry(registry).record_base(BaseModelRef(id="other/model", digest="sha256:" + "0" * 64))
    ws = Workspace(TuningConfig(), taxonomy, env / "out", env / "models", registry)
    with pytest.raises(RecipeInvalid) as exc:
        ws.preflight()
    assert "the registry's gateway serves 'other/model'" in exc.value.message
    cfg = TuningConfig()
    cfg.training.knowledge.rank = cfg.training.skills.rank = 128
    ws = Workspace(cfg, taxonomy, env / "out", env / "models", env / "fresh-registry", max_rank=64)
    with pytest.raises(RecipeInvalid, match="above adapters.engine.max_lora_rank 64"):
        ws.preflight()
