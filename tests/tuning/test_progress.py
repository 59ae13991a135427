"""``progress.json``: what a running ``carafe tune`` tells whoever watches it (the console's
tuning page reads the file). A real short training writes it; read back the way the
console reads it, the run is running with its phase, step, loss and tokens/s, and done
or failed once the stage ends."""

from __future__ import annotations

import json
import time

import pytest

from carafe.gateway.console.tuning import live
from carafe.tuning.progress import RunProgress
from carafe.tuning.train import StepInfo, train
from tests.conftest import MODELS_CACHE
from tests.tuning.test_train import SAMPLES, _tiny


def test_a_failed_stage_says_so_and_why(tmp_path):
    with pytest.raises(RuntimeError), RunProgress(tmp_path, "eval"):
        raise RuntimeError("the judge is unreachable")
    data = json.loads((tmp_path / "progress.json").read_text())
    assert (data["stage"], data["error"]) == ("failed", "the judge is unreachable")
    assert live(tmp_path) is None  # nothing is running


def test_steps_keep_the_newest_losses_of_the_current_phase(tmp_path):
    with RunProgress(tmp_path, "train") as watched:
        for step in range(1, 4):
            watched.step(StepInfo("knowledge", step, 3, 2.0 / step, 100.0))
        watched.step(StepInfo("skills", 1, 5, 0.9, 80.0))
        seen = live(tmp_path)
    assert seen is not None and seen["running"] and seen["losses"] == [[1, 0.9]]
    assert (seen["phase"], seen["step"], seen["total"], seen["tokens_per_s"]) == ("skills", 1, 5, 80.0)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_real_training_is_watched_while_it_runs(tmp_path):
    watched_steps: list[dict] = []
    with RunProgress(tmp_path, "train") as watched:

        def on_step(info: StepInfo) -> None:
            watched.step(info)
            if info.step == info.total:  # the end of a phase is always written
                watched_steps.append(live(tmp_path) or {})

        stats = train(SAMPLES, _tiny(), MODELS_CACHE, tmp_path / "train", on_step=on_step)
    assert [w["phase"] for w in watched_steps] == [s.name for s in stats]
    for seen, st in zip(watched_steps, stats, strict=True):
        assert seen["running"] and seen["stage"] == "train" and seen["step"] == seen["total"] == st.steps
        assert seen["loss"] == pytest.approx(st.final_loss, abs=1e-4) and seen["tokens_per_s"] > 0
        assert seen["losses"][-1][0] == st.steps and time.time() - seen["updated_at"] < 600
    assert json.loads((tmp_path / "progress.json").read_text())["stage"] == "done"
