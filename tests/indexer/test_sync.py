"""Incremental sync: what is (not) re-embedded, replaced, deleted; bad files leave nothing behind."""

from __future__ import annotations

from pathlib import Path

from carafe.indexer.acl import AccessScope
from carafe.indexer.config import SourceConfig
from carafe.indexer.manifest import point_ids
from tests.indexer.conftest import write

ADMIN = AccessScope.of("root", admin=True)


def test_full_then_unchanged_sync_embeds_nothing(make_index, embedder, policies):
    index = make_index(SourceConfig(name="policies", path=policies))
    first = index.sync()
    assert first.counts()["added"] == len(first.added) >= 30 and not first.failed
    chunks = index.store.count()
    assert chunks == first.chunks_embedded == embedder.texts
    again = index.sync()
    assert again.counts() == {
        "added": 0,
        "updated": 0,
        "acl_updated": 0,
        "deleted": 0,
        "unchanged": len(first.added),
        "failed": 0,
    }
    assert embedder.texts == chunks  # nothing re-embedded
    assert index.store.count() == chunks


def test_another_embedding_model_re_embeds_every_document(make_index, embedder, small_policies, tmp_path):
    index = make_index(SourceConfig(name="policies", path=small_policies))
    first = index.sync()
    chunks = index.store.count()
    index.close()

    embedder.model_id += "-int8"  # e.g. indexer.embedding.quantize switched: other vectors
    again = make_index(SourceConfig(name="policies", path=small_policies), data_dir=tmp_path / "data")
    embedder.texts = 0
    report = again.sync()
    assert sorted(report.updated) == sorted(first.added) and not report.unchanged
    assert embedder.texts == chunks and again.store.count() == chunks  # all re-embedded, no duplicates
    assert any("re-embedded" in note for note in report.notes)
    assert again.sync().counts()["unchanged"] == len(first.added)  # and only once


def test_changed_doc_replaces_all_its_chunks(make_index, tmp_path):
    root = tmp_path / "src"
    long_text = "# Handbook\n\n" + "\n\n".join(f"## Part {i}\n" + "Alpha beta gamma. " * 60 for i in range(6))
    write(root, "handbook.md", "---\nacl: {groups: [staff]}\n---\n" + long_text)
    index = make_index(SourceConfig(name="s", path=root))
    index.sync()
    before = index.store.doc_points()["s:handbook.md"]
    assert len(before) > 3
    write(
        root,
        "handbook.md",
        "---\nacl: {groups: [staff]}\n---\n# Handbook\n\nNow a single short paragraph about zebras.",
    )
    report = index.sync()
    assert report.updated == ["s:handbook.md"]
    after = index.store.doc_points()["s:handbook.md"]
    assert after == point_ids("s:handbook.md", 1)  # stale chunks gone, no duplicates
    [hit] = index.search("zebras", ADMIN, top_k=5)
    assert "zebras" in hit.text


def test_deleted_doc_disappears(make_index, tmp_path):
    root = tmp_path / "src"
    write(root, "_acl.yaml", "acl: {groups: [staff]}\n")
    write(root, "keep.md", "# Keep\nkept text")
    gone = write(root, "gone.md", "# Gone\nthe porcupine protocol")
    index = make_index(SourceConfig(name="s", path=root))
    index.sync()
    gone.unlink()
    report = index.sync()
    assert report.deleted == ["s:gone.md"]
    assert set(index.store.doc_points()) == {"s:keep.md"}
    assert all(p.doc_id != "s:gone.md" for p in index.search("porcupine protocol", ADMIN))


def test_acl_only_change_updates_payloads_without_re_embedding(make_index, embedder, tmp_path):
    root = tmp_path / "src"
    write(root, "memo.md", "# Memo\nThe walrus budget is 42 euros.")
    sidecar = write(root, "memo.md.acl.yaml", "acl: {groups: [finance]}\n")
    index = make_index(SourceConfig(name="s", path=root))
    index.sync()
    assert index.search("walrus budget", AccessScope.of("u", ["finance"]))
    embedded = embedder.texts
    sidecar.write_text("acl: {groups: [legal]}\nsensitivity: restricted\n")
    report = index.sync()
    assert report.acl_updated == ["s:memo.md"] and not report.updated
    assert embedder.texts == embedded
    assert index.search("walrus budget", AccessScope.of("u", ["finance"])) == []
    [hit] = index.search("walrus budget", AccessScope.of("u", ["legal"]))
    assert hit.sensitivity == "restricted"


def test_bad_file_leaves_nothing_and_the_rest_is_indexed(make_index, tmp_path):
    root = tmp_path / "src"
    write(root, "_acl.yaml", "acl: {groups: [staff]}\n")
    write(root, "ok.md", "# Ok\nthe good document")
    flaky = write(root, "flaky.md", "# Flaky\nthe flamingo rota")
    index = make_index(SourceConfig(name="s", path=root))
    index.sync()
    assert "s:flaky.md" in index.store.doc_points()
    flaky.write_text("---\nacl: {groups: [staff\n---\n# Flaky\nthe flamingo rota, edited")
    (root / "junk.pdf").write_bytes(b"%PDF-1.7 garbage")
    report = index.sync()
    assert {f.path: f.reason.split(":")[1].strip()[:6] for f in report.failed} == {
        "flaky.md": "broken",
        "junk.pdf": "unread",
    }
    assert set(index.store.doc_points()) == {"s:ok.md"}  # nothing partial, no stale ACL left behind


def test_sync_of_one_source_leaves_the_others_alone(make_index, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write(a, "one.md", "---\nacl: {groups: [g]}\n---\n# One\ntext one")
    write(b, "two.md", "---\nacl: {groups: [g]}\n---\n# Two\ntext two")
    index = make_index(SourceConfig(name="a", path=a), SourceConfig(name="b", path=b))
    index.sync()
    (a / "one.md").unlink()
    report = index.sync("a")
    assert report.deleted == ["a:one.md"]
    assert set(index.store.doc_points()) == {"b:two.md"}


def test_last_report_and_stats_survive_a_reopen(make_index, tmp_path, small_policies):
    data = tmp_path / "d"
    policies = small_policies
    index = make_index(SourceConfig(name="policies", path=policies), data_dir=data)
    report = index.sync()
    index.close()
    reopened = make_index(SourceConfig(name="policies", path=policies), data_dir=data)
    stats = reopened.stats()
    assert stats["documents"] == len(report.added) and stats["chunks"] == report.chunks_embedded
    assert reopened.last_report()["counts"]["added"] == len(report.added)
    assert Path(stats["store"]).is_dir()


def test_documents_lists_each_document_as_stored_with_its_acl(store_kind, make_index, tmp_path):
    root = tmp_path / "src"
    write(root, "memo.md", "---\nacl: {groups: [finance], users: [ann]}\nsensitivity: restricted\n---\n# Memo\ntext")
    write(root, "long.md", "---\nacl: {groups: [staff]}\n---\n# Long\n\n" + "Alpha beta gamma. " * 400)
    index = make_index(SourceConfig(name="s", path=root), kind=store_kind)
    index.sync()
    docs = {d["doc_id"]: d for d in index.documents()}
    assert docs["s:memo.md"] == {
        "doc_id": "s:memo.md",
        "title": "Memo",
        "version": docs["s:memo.md"]["version"],
        "chunks": 1,
        "injection_flags": [],
        "acl_groups": ["finance"],
        "acl_users": ["ann"],
        "sensitivity": "restricted",
    }
    assert docs["s:long.md"]["chunks"] == len(index.store.doc_points()["s:long.md"]) > 1
    assert docs["s:long.md"]["acl_groups"] == ["staff"] and docs["s:long.md"]["sensitivity"] == "internal"
