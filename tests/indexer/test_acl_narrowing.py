"""ACL narrowing never waits for re-embedding: when a document's ACL changes, its stored
points are narrowed before any embedding, so neither a slow sync nor a kill -9 in the
middle of one leaves text readable by someone its source no longer admits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from carafe.indexer.acl import AccessScope, Acl
from carafe.indexer.config import IndexerConfig, SourceConfig
from carafe.indexer.index import Index
from carafe.indexer.sync import CRASH_ENV
from tests.conftest import REPO
from tests.indexer.conftest import write

FINANCE = AccessScope.of("fiona", ["finance"])


def wider_than_source(index: Index) -> dict[str, str]:
    """Stored points whose ACL admits someone their document's source does not admit now."""
    now = {d.doc_id: d.acl for s in index.sources() for d in s.scan()[0]}
    ids = sorted(i for ids in index.store.doc_points().values() for i in ids)
    out = {}
    for pid, payload in index.store.payloads(ids).items():
        doc_id, stored = str(payload["doc_id"]), Acl.of_payload(payload)
        source = now.get(doc_id)
        if source is None:
            out[pid] = f"{doc_id}: no longer readable at its source, still stored"
        elif not (set(stored.groups) <= set(source.groups) and set(stored.users) <= set(source.users)):
            out[pid] = f"{doc_id}: stored {stored.groups}/{stored.users}, source {source.groups}/{source.users}"
    return out


def narrow_and_rewrite(root: Path, n: int) -> None:
    """Each memo leaves finance for legal (sidecar) and gets new text: content + ACL change."""
    for i in range(n):
        write(root, f"memo-{i}.md.acl.yaml", "acl: {groups: [legal]}\nsensitivity: restricted\n")
        write(root, f"memo-{i}.md", f"# Memo {i}\n\nThe walrus budget {i} is now sealed.")


def memos(root: Path, n: int) -> None:
    for i in range(n):
        write(root, f"memo-{i}.md.acl.yaml", "acl: {groups: [finance, legal]}\n")
        write(root, f"memo-{i}.md", f"# Memo {i}\n\nThe walrus budget {i} is {40 + i} euros.")


class WatchingEmbedder:
    """The real embedder, recording the stored points wider than their source at each call."""

    def __init__(self, inner) -> None:
        self.inner, self.dim, self.model_id = inner, inner.dim, inner.model_id
        self.index: Index | None = None
        self.seen: list[dict[str, str]] = []

    def encode(self, texts):
        if self.index is not None:
            self.seen.append(wider_than_source(self.index))
        return self.inner.encode(texts)


def test_content_and_acl_change_is_narrowed_before_any_embedding(store_kind, make_index, embedder, tmp_path):
    root = tmp_path / "src"
    memos(root, 3)
    index = make_index(SourceConfig(name="s", path=root), kind=store_kind)
    index.sync()
    assert len(index.search("walrus budget", FINANCE, top_k=10)) == 3
    watcher = WatchingEmbedder(embedder)
    index.embedder, watcher.index = watcher, index
    index.config.sync_batch_chunks = 1
    narrow_and_rewrite(root, 3)

    report = index.sync()
    assert len(watcher.seen) == 3 and watcher.seen == [{}, {}, {}]  # narrow already at the first embedding
    assert sorted(report.acl_narrowed) == sorted(report.updated) == [f"s:memo-{i}.md" for i in range(3)]
    assert index.search("walrus budget", FINANCE, top_k=10) == []
    assert len(index.search("walrus budget sealed", AccessScope.of("lee", ["legal"]), top_k=10)) == 3


def test_widening_waits_for_the_new_text_and_same_text_takes_the_new_acl(make_index, embedder, tmp_path):
    root = tmp_path / "src"
    write(root, "plan.md", "---\nacl: {groups: [board]}\n---\n# Plan\n\nThe merger with Okapi Ltd closes in May.")
    index = make_index(SourceConfig(name="s", path=root))
    index.sync()
    write(root, "plan.md", "---\nacl: {groups: [board, staff]}\n---\n# Plan\n\nA merger is planned.")
    report = index.refresh_acls()  # the old, secret text must not become readable by staff
    assert report.acl_narrowed == [] and embedder.texts == 1
    assert index.search("merger Okapi", AccessScope.of("sam", ["staff"])) == []
    index.sync()
    [hit] = index.search("merger planned", AccessScope.of("sam", ["staff"]))
    assert "Okapi" not in hit.text


def test_refresh_acls_narrows_and_deletes_without_embedding(store_kind, make_index, embedder, tmp_path):
    root = tmp_path / "src"
    memos(root, 2)
    write(root, "gone.md", "---\nacl: {groups: [finance]}\n---\n# Gone\nthe porcupine ledger")
    index = make_index(SourceConfig(name="s", path=root), kind=store_kind)
    index.sync()
    embedded = embedder.texts
    narrow_and_rewrite(root, 2)
    (root / "gone.md").unlink()
    last = index.last_report()

    report = index.refresh_acls()
    assert embedder.texts == embedded  # nothing embedded
    assert report.deleted == ["s:gone.md"] and len(report.acl_narrowed) == 2
    assert any("wait for a sync" in n for n in report.notes)
    assert wider_than_source(index) == {} and index.search("walrus porcupine", FINANCE, top_k=10) == []
    assert index.last_report() == last  # the last sync's report stays the console's and CLI's
    assert sorted(index.sync().updated) == ["s:memo-0.md", "s:memo-1.md"]  # the next sync re-embeds them


CONFIG = """
data_dir: {data}
indexer:
  sync_batch_chunks: 1
  sources: [{{name: s, path: {root}}}]
"""


def carafe_bin() -> list[str]:
    script = Path(sys.executable).with_name("carafe")
    return [str(script)] if script.exists() else [sys.executable, "-m", "carafe.cli.main"]


@pytest.mark.slow
# "after_narrow:1": killed while narrowing (one memo done): the start-up pass repairs the rest
# without embedding; "after_upsert:1": killed once the first changed memo is re-embedded.
@pytest.mark.parametrize("crash_at", ["after_narrow:1", "after_upsert:1"])
def test_kill_9_of_carafe_index_sync_never_leaves_an_acl_wider_than_the_source(crash_at, tmp_path, real_embedder):
    root, data = tmp_path / "src", tmp_path / "data"
    memos(root, 6)
    config_path = write(tmp_path, "carafe.yaml", CONFIG.format(data=data, root=root))
    config = IndexerConfig.model_validate(yaml.safe_load(config_path.read_text())["indexer"])
    index = Index(config, real_embedder, data_dir=data)
    index.sync()
    index.close()
    narrow_and_rewrite(root, 6)

    env = {**os.environ, CRASH_ENV: crash_at, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cmd = [*carafe_bin(), "index", "sync", "--config", str(config_path), "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]

    index = Index(config, real_embedder, data_dir=data)
    try:
        if crash_at.startswith("after_narrow"):
            assert len(wider_than_source(index)) == 5  # the five memos it had not reached yet
            assert index.refresh_acls().chunks_embedded == 0  # what a gateway runs at start
        assert wider_than_source(index) == {}
        assert index.search("walrus budget", FINANCE, top_k=10) == []
        index.sync()
        assert wider_than_source(index) == {} and index.sync().counts()["unchanged"] == 6
    finally:
        index.close()
