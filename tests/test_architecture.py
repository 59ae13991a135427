"""The import contract of ARCHITECTURE.md's arrows (gateway -> adapters, indexer,
guards; tuning -> adapters, guards, indexer's chunking/prompt; guards -> indexer;
indexer and adapters -> nothing of Carafe), checked by import-linter on the real
tree, and shown to fail when a package imports across an arrow."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
    )


def test_the_tree_keeps_every_contract():
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("carafe/indexer/chunking.py", "import carafe.gateway.auth", "indexer imports no other Carafe package"),
        ("carafe/adapters/registry.py", "import carafe.indexer.acl", "adapters import no other Carafe package"),
        (
            "carafe/tuning/filters.py",
            "import carafe.indexer.embedding",
            "tuning imports adapters, guards and the indexer",
        ),
        ("carafe/guards/verdict.py", "import carafe.adapters.engine", "guards import the indexer only"),
        ("carafe/state/keys.py", "import carafe.gateway.auth", "state imports no other Carafe package"),
    ],
)
def test_an_import_across_an_arrow_breaks_the_contract(tmp_path, module, line, contract):
    shutil.copytree(REPO / "carafe", tmp_path / "carafe", ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # across the arrow\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert f"{contract}" in result.stdout and "BROKEN" in result.stdout
