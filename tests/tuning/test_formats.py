"""sdg_hub and training_hub formats (issue 30, item 5): flow output and mixed data train here; Carafe's
data exports as training_hub reads it, and reads back the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carafe.cli.main import app
from carafe.tuning.config import TuningConfig
from carafe.tuning.errors import RecipeInvalid
from carafe.tuning.formats import export_training_hub, read_external
from carafe.tuning.pipeline import Workspace, import_dataset, load_dataset

CORPUS = Path(__file__).resolve().parent / "corpus" / "sdg_hub"


def test_a_key_facts_flow_output_becomes_document_then_question_samples():
    samples = read_external(CORPUS / "key_facts_flow.jsonl")
    assert len(samples) == 2 and all(s["phase"] == "knowledge" for s in samples)
    user, answer = (m["content"] for m in samples[0]["messages"])
    assert user.startswith("The Acme travel policy covering") and user.endswith("\n\nWhere are business trips booked?")
    assert "1. All business trips are booked through the travel portal TripDesk." in user  # the document first
    assert answer == "Through the travel portal TripDesk."  # sdg_hub's [END] tag stripped
    assert samples[1]["messages"][-1]["content"] == "160 euros per night."
    assert samples[0]["provenance"]["stage"] == "sdg_hub" and len(samples[0]["provenance"]["source_sha256"]) == 64
    plain = read_external(CORPUS / "key_facts_flow.jsonl", with_document=False)
    assert plain[0]["messages"][0]["content"] == "Where are business trips booked?"


def test_mixed_messages_rows_are_taken_as_they_are():
    samples = read_external(CORPUS / "knowledge_mixed.jsonl")
    assert [m["role"] for m in samples[1]["messages"]] == ["user", "assistant"]
    assert samples[1]["messages"][1]["content"] == "45 euros." and samples[1]["provenance"]["stage"] == "messages"


def test_export_round_trips_through_the_training_hub_format(tmp_path):
    samples = read_external(CORPUS / "key_facts_flow.jsonl")
    assert export_training_hub(samples, tmp_path / "th.jsonl") == 2
    rows = [json.loads(line) for line in (tmp_path / "th.jsonl").read_text().splitlines()]
    assert set(rows[0]) == {"messages", "metadata"} and isinstance(rows[0]["metadata"], str)
    assert json.loads(rows[0]["metadata"])["dataset"] == "carafe"
    again = read_external(tmp_path / "th.jsonl")
    assert [s["messages"] for s in again] == [s["messages"] for s in samples]


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ('{"prompt": "x", "completion": "y"}', "neither `messages`"),
        ('{"messages": [{"role": "user", "content": "hi"}]}', "must be the assistant's"),
        ('{"messages": [{"role": "bot", "content": "hi"}]}', "role system/user/assistant"),
        ("not json", "not a JSON line"),
    ],
)
def test_bad_rows_name_the_file_and_line(tmp_path, line, said):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q?", "response": "a."}\n' + line + "\n")
    with pytest.raises(RecipeInvalid) as exc:
        read_external(path)
    assert exc.value.message.startswith(f"{path}:2: ") and said in exc.value.message


def test_imported_data_is_the_workspace_training_set_and_exports_from_the_cli(tmp_path, monkeypatch):
    ws = Workspace(TuningConfig(), tmp_path / "taxonomy", tmp_path / "out", tmp_path / "models", tmp_path / "reg")
    summary = import_dataset(ws, CORPUS / "key_facts_flow.jsonl")
    samples, stamp = load_dataset(ws)
    assert summary["samples"] == 2 == len(samples) and stamp["teacher"] == "external:key_facts_flow.jsonl"
    monkeypatch.setenv("CARAFE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CARAFE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "carafe.yaml"
    config.write_text(f"tuning:\n  output_dir: {tmp_path / 'out'}\n")
    result = CliRunner().invoke(app, ["tune", "export", str(tmp_path / "x.jsonl"), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == 2
