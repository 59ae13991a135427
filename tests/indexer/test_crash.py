"""kill -9 in the middle of a sync, then sync again: the index equals a fresh one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from carafe.indexer.config import IndexerConfig, SourceConfig
from carafe.indexer.index import Index
from carafe.indexer.sync import CRASH_ENV
from tests.conftest import REPO
from tests.indexer.conftest import POLICIES, write

SUBSET = [
    "_acl.yaml",
    "hr/_acl.yaml",
    "hr/annual-leave.md",
    "finance/_acl.yaml",
    "finance/q3-forecast.md",
    "finance/budget-2027.md",
    "finance/budget-2027.md.acl.yaml",
    "legal/_acl.yaml",
    "legal/data-retention.md",
    "public/_acl.yaml",
    "public/support-hours.md",
    "public/company-overview.md",
]

SYNC_SCRIPT = """
import json, sys
from pathlib import Path
from carafe.indexer.config import IndexerConfig
from carafe.indexer.embedding import Embedder
from carafe.indexer.index import Index
config = IndexerConfig.model_validate(json.loads(sys.argv[1]))
index = Index(config, Embedder(), data_dir=Path(sys.argv[2]))
index.sync()
index.close()
"""


def snapshot(index: Index) -> dict[str, dict]:
    ids = sorted(i for ids in index.store.doc_points().values() for i in ids)
    return index.store.payloads(ids)


def mutate(root: Path) -> None:
    """Content changes (with fewer chunks), an ACL-only change, a deletion, a new document."""
    write(
        root,
        "hr/annual-leave.md",
        "---\nacl: {groups: [employees]}\n---\n# Annual Leave Policy\n\nLeave is now 30 days.",
    )
    write(root, "finance/q3-forecast.md", "# Q3 2026 Revenue Forecast\n\nRevised: 15.0 million euros.")
    write(root, "legal/data-retention.md.acl.yaml", "acl: {groups: [legal, compliance]}\nsensitivity: restricted\n")
    (root / "public" / "support-hours.md").unlink()
    write(root, "public/new-office.md", "# New Office\n\nWe open an office in Warsaw in 2027.")


@pytest.mark.slow
# Kills in the two phases that can leave something wrong behind: re-permissioning (after
# the deletions of gone documents: a stale ACL) and mid-way through re-embedding (new
# chunks written, stale ones and the manifest not yet). Each kill costs a fresh
# interpreter loading the model, so the other points ("after_delete_doc",
# "after_delete_stale", "after_manifest") are left to `CARAFE_INDEX_CRASH_AT` by hand.
@pytest.mark.parametrize("crash_at", ["after_set_payload", "after_upsert:2"])
def test_kill_9_mid_sync_then_resync_equals_a_fresh_index(crash_at, tmp_path, real_embedder):
    policies = tmp_path / "policies"
    for rel in SUBSET:
        if (POLICIES / rel).exists():
            write(policies, rel, (POLICIES / rel).read_text())
    config = IndexerConfig(sources=[SourceConfig(name="policies", path=policies)], sync_batch_chunks=1)
    data = tmp_path / "data"
    index = Index(config, real_embedder, data_dir=data)
    index.sync()
    index.close()
    mutate(policies)

    env = {**os.environ, CRASH_ENV: crash_at, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", SYNC_SCRIPT, config.model_dump_json(), str(data)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]

    index = Index(config, real_embedder, data_dir=data)
    index.sync()
    fresh = Index(config, real_embedder, data_dir=tmp_path / "fresh")
    fresh.sync()
    try:
        assert snapshot(index) == snapshot(fresh)
        assert json.dumps(index.stats()["documents"]) == json.dumps(fresh.stats()["documents"])
    finally:
        index.close()
        fresh.close()
