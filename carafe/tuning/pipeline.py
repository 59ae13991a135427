"""The tuning stages end to end, each reusing its output when its inputs' content hash is unchanged.

Layout under the output folder (default ``<data_dir>/tuning``)::

    generate/<leaf>/units.jsonl, report.json   teacher answers (resumable), drop report
    data/train.jsonl, data/stamp.json           the training set (messages JSONL + provenance)
    train/adapter/, train/stamp.json            the PEFT adapter, per-phase stats
    eval/report.json                            base vs adapter, forgetting, gate
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carafe.tuning.config import TuningConfig
from carafe.tuning.documents import DocumentSource
from carafe.tuning.errors import GateFailed, RecipeInvalid, StageMissing
from carafe.tuning.generate import Advance, generate_leaves, holdout, write_dataset
from carafe.tuning.recipe import Recipe, read_sidecar
from carafe.tuning.teacher import Teacher, make_teacher
from carafe.tuning.train import OnStep
from carafe.tuning.validate import validate_taxonomy

log = logging.getLogger("carafe.tuning")


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Workspace:
    """Where a tuning run reads and writes."""

    cfg: TuningConfig
    taxonomy: Path
    out: Path
    models_dir: Path
    registry_dir: Path
    max_rank: int = 64  # adapters.engine.max_lora_rank: the registry refuses higher ranks

    def stamp(self, stage: str) -> dict[str, Any] | None:
        path = self.out / stage / "stamp.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def write_stamp(self, stage: str, data: dict[str, Any]) -> None:
        (self.out / stage).mkdir(parents=True, exist_ok=True)
        (self.out / stage / "stamp.json").write_text(json.dumps(data, indent=2, default=str))

    def documents(self) -> DocumentSource:
        """Remote knowledge documents: the configured mirrors, else clones under the output folder."""
        c = self.cfg
        return DocumentSource(c.document_mirrors, self.out / "documents", c.document_roots, c.document_hosts)

    def recipes(self) -> list[Recipe]:
        report = validate_taxonomy(self.taxonomy, docs=self.documents())
        if not report.ok:
            errors = [str(i) for i in report.issues if i.severity == "error"]
            raise RecipeInvalid(
                f"the taxonomy {self.taxonomy} has {len(errors)} error(s): " + "; ".join(errors[:5]), report.issues
            )
        return report.recipes

    def preflight(self, name: str | None = None) -> list[Recipe]:
        """The valid recipes, after checking all that publish will need (name, sidecars, base, rank)."""
        from carafe.tuning.preflight import base_issues, sidecar_issues

        recipes = self.recipes()
        t = self.cfg.training
        issues = sidecar_issues(self.taxonomy, recipes, name)
        issues += base_issues(t.base_model, self.registry_dir, max(t.knowledge.rank, t.skills.rank), self.max_rank)
        if issues:
            raise RecipeInvalid(
                f"{len(issues)} problem(s) would stop publish after the work; fixed before it starts: "
                + "; ".join(str(i) for i in issues[:5]),
                issues,
            )
        return recipes


def generate_stage(
    ws: Workspace,
    recipes: list[Recipe],
    *,
    teacher: Teacher | None = None,
    force: bool = False,
    advance: Advance | None = None,
    encode: Callable | None = None,
) -> dict[str, Any]:
    """Generate and filter data for every leaf; reuse it when recipes and settings are unchanged."""
    teacher = teacher or make_teacher(ws.cfg.teacher, ws.models_dir, ws.cfg.training.base_model)
    key = _hash(
        [[r.leaf, r.sha256] for r in recipes]
        + [ws.cfg.generation.model_dump(mode="json"), ws.cfg.filters.model_dump(mode="json"), teacher.name]
    )
    stamp = ws.stamp("data")
    if not force and stamp and stamp["input"] == key and (ws.out / "data" / "train.jsonl").is_file():
        return {**stamp, "reused": True}
    if encode is None and ws.cfg.filters.near_duplicate < 1:
        log.warning("near-duplicate filter off: no sentence encoder given (the CLI passes the configured embedder)")
    t0 = time.perf_counter()
    results = asyncio.run(
        generate_leaves(
            recipes, ws.cfg, teacher, ws.out / "generate", encode=encode, advance=advance, docs=ws.documents()
        )
    )
    path = ws.out / "data" / "train.jsonl"
    sha, n = write_dataset(results, path)
    summary = {
        "input": key,
        "data_sha256": sha,
        "samples": n,
        "bytes": path.stat().st_size,
        "teacher": teacher.name,
        "seconds": round(time.perf_counter() - t0, 1),
        "reports": [r.report.to_dict() for r in results],
        "by_phase": {p: sum(r.phase == p for r in results for _ in r.samples) for p in ("knowledge", "skills")},
    }
    ws.write_stamp("data", summary)
    return {**summary, "reused": False}


def import_dataset(ws: Workspace, path: Path, *, phase: str = "knowledge") -> dict[str, Any]:
    """Make an sdg_hub flow's JSONL (or a messages JSONL) the workspace's training data."""
    from carafe.tuning.formats import read_external

    samples = read_external(path, phase=phase)
    out = ws.out / "data" / "train.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(json.dumps(s, sort_keys=True) for s in samples) + "\n").encode()
    out.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    summary = {
        "input": f"import:{sha}",
        "data_sha256": sha,
        "samples": len(samples),
        "bytes": len(data),
        "teacher": f"external:{path.name}",
        "seconds": 0.0,
        "reports": [],
        "by_phase": {p: sum(s["phase"] == p for s in samples) for p in ("knowledge", "skills")},
    }
    ws.write_stamp("data", summary)
    return summary


def load_dataset(ws: Workspace) -> tuple[list[dict], dict[str, Any]]:
    stamp = ws.stamp("data")
    path = ws.out / "data" / "train.jsonl"
    if not stamp or not path.is_file():
        raise StageMissing(f"no generated data in {ws.out / 'data'}: run `carafe tune generate` first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()], stamp


def train_stage(
    ws: Workspace, *, force: bool = False, on_step: OnStep | None = None, replay: bool = True, folder: str = "train"
) -> dict[str, Any]:
    from carafe.tuning.train import train

    samples, data = load_dataset(ws)
    key = _hash([data["data_sha256"], ws.cfg.training.model_dump(mode="json"), replay])
    stamp = ws.stamp(folder)
    if (
        not force
        and stamp
        and stamp["input"] == key
        and (ws.out / folder / "adapter" / "adapter_model.safetensors").is_file()
    ):
        return {**stamp, "reused": True}
    t0 = time.perf_counter()
    stats = train(samples, ws.cfg.training, ws.models_dir, ws.out / folder, replay=replay, on_step=on_step)
    summary = {
        "input": key,
        "adapter": str(ws.out / folder / "adapter"),
        "replay": replay,
        "seconds": round(time.perf_counter() - t0, 1),
        "phases": [
            {
                "name": s.name,
                "samples": s.samples,
                "steps": s.steps,
                "tokens": s.tokens,
                "seconds": round(s.seconds, 1),
                "tokens_per_s": round(s.tokens_per_s, 1),
                "final_loss": round(s.final_loss, 4),
                "hyperparameters": s.hyperparameters,
            }
            for s in stats
        ],
    }
    ws.write_stamp(folder, summary)
    return {**summary, "reused": False}


def eval_stage(
    ws: Workspace, recipes: list[Recipe], *, force: bool = False, folder: str = "train", encode: Callable | None = None
) -> dict[str, Any]:
    """Base vs adapter, forgetting, the four cells (``encode``: the RAG cells' retriever), the gate."""
    from carafe.adapters.manifest import content_digest
    from carafe.tuning.base_model import pick_device
    from carafe.tuning.cells import HELDOUT_FILE
    from carafe.tuning.documents import chunk_documents
    from carafe.tuning.evaluate import KnowledgeEval, apply_gate, evaluate
    from carafe.tuning.recipe import file_sha256

    adapter = ws.out / folder / "adapter"
    if not (adapter / "adapter_model.safetensors").is_file():
        raise StageMissing(f"no trained adapter in {adapter}: run `carafe tune train` first")
    judge = (
        make_teacher(ws.cfg.teacher, ws.models_dir, ws.cfg.training.base_model)
        if ws.cfg.eval_judge and ws.cfg.teacher.endpoint not in (None, "offline", "local")
        else None
    )
    key = _hash(
        [
            content_digest(adapter),
            [[r.leaf, r.sha256] for r in recipes],
            ws.cfg.eval_max_new_tokens,
            ws.cfg.generation.holdout_seeds,
            judge.name if judge else None,
            ws.cfg.eval_rag_top_k,
            encode is not None,
            [file_sha256(p) for r in recipes if (p := r.path.parent / HELDOUT_FILE).is_file()],
        ]
    )
    path = ws.out / "eval" / f"{folder}.json"
    if not force and path.is_file() and (old := json.loads(path.read_text())).get("input") == key:
        old["gate"] = apply_gate(old["metrics"], ws.cfg.gate)  # the gate may have been re-configured
        return {**old, "reused": True}
    t0 = time.perf_counter()
    report = evaluate(
        recipes,
        holdout(recipes, ws.cfg),
        ws.models_dir,
        adapter,
        ws.cfg.gate,
        max_new_tokens=ws.cfg.eval_max_new_tokens,
        device=pick_device(ws.cfg.training.device),
        base_model=ws.cfg.training.base_model,
        judge=judge,
        judge_concurrency=ws.cfg.teacher.concurrency,
        knowledge=KnowledgeEval.of(
            recipes,
            ws.cfg.generation.holdout_seeds,
            lambda r: chunk_documents(ws.documents().read(r), ws.cfg.generation.chunk_words),
            ws.cfg.eval_rag_top_k,
            encode,
        ),
    )
    summary = {
        "input": key,
        "seconds": round(time.perf_counter() - t0, 1),
        "judge": judge.name if judge else None,
        **report.to_dict(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
    return {**summary, "reused": False}


def publish_stage(
    ws: Workspace, recipes: list[Recipe], *, name: str | None = None, force: bool = False, actor: str = "carafe-tune"
) -> dict[str, Any]:
    from carafe.tuning.base_model import base_ref
    from carafe.tuning.publish import adapter_identity, build_manifest, publish

    _, data = load_dataset(ws)
    train_stamp = ws.stamp("train")
    evaluation = ws.out / "eval" / "train.json"
    if not train_stamp or not evaluation.is_file():
        raise StageMissing(
            "publish needs a trained and evaluated adapter: run `carafe tune train` and `carafe tune eval` first"
        )
    report = json.loads(evaluation.read_text())
    from carafe.tuning.evaluate import apply_gate

    gate = apply_gate(report["metrics"], ws.cfg.gate)
    if not gate["passed"] and ws.cfg.gate.enforce and not force:
        raise GateFailed(
            "the evaluation gate refused to publish: "
            + "; ".join(gate["failed"])
            + " (improve the recipes/data, relax tuning.gate, or pass --force)"
        )
    adapter_name, kind, description = adapter_identity(read_sidecar(ws.taxonomy), recipes, name)
    hyper = {p["name"]: p["hyperparameters"] for p in train_stamp["phases"]}
    hyper["seed"] = ws.cfg.training.seed
    hyper["replay"] = train_stamp["replay"]
    manifest = build_manifest(
        base=base_ref(ws.cfg.training.base_model),
        name=adapter_name,
        kind=kind,
        description=description,
        recipes=recipes,
        taxonomy=ws.taxonomy,
        data_sha256=data["data_sha256"],
        data_size=data["samples"],
        data_bytes=data["bytes"],
        teacher=data["teacher"],
        hyperparameters=hyper,
        metrics={**report["metrics"], "gate": gate},
    )
    stored = publish(ws.out / "train" / "adapter", manifest, ws.registry_dir, ws.out / "publish-staging", actor=actor)
    return {
        "name": stored.name,
        "version": stored.version,
        "ref": stored.ref,
        "registry": str(ws.registry_dir),
        "gate": gate,
        "manifest": json.loads(stored.model_dump_json()),
    }
