"""A symlink never lends its folder's ACL to another document, and the embedded index
(whose WAL and segments hold restricted text) is its owner's alone."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from carafe.indexer.acl import AccessScope
from carafe.indexer.config import SourceConfig
from carafe.indexer.sources import Source
from tests.indexer.conftest import write

PUBLIC_READER = AccessScope.of("guest", ["everyone"])
FINANCE = AccessScope.of("fiona", ["finance", "everyone"])


def test_a_link_to_a_finance_document_in_public_keeps_the_finance_acl(make_index, policies):
    # The attack as shown: public/q3-summary.md -> ../finance/q3-forecast.md made the forecast public.
    os.symlink(Path("..") / "finance" / "q3-forecast.md", policies / "public" / "q3-summary.md")
    index = make_index(SourceConfig(name="policies", path=policies))
    report = index.sync()
    assert "policies:public/q3-summary.md" in report.added
    docs, _ = Source(SourceConfig(name="policies", path=policies)).scan()
    by_path = {d.path: d for d in docs}
    assert by_path["public/q3-summary.md"].acl == by_path["finance/q3-forecast.md"].acl
    assert by_path["public/q3-summary.md"].acl.groups == ("finance",)

    seen = {p.doc_id for p in index.search("Q3 2026 revenue forecast Northwind", PUBLIC_READER, top_k=10)}
    assert not seen & {"policies:public/q3-summary.md", "policies:finance/q3-forecast.md"}
    seen = {p.doc_id for p in index.search("Q3 2026 revenue forecast Northwind", FINANCE, top_k=10)}
    assert "policies:public/q3-summary.md" in seen  # the target's readers still find it


def test_links_leaving_the_source_or_broken_are_failed_with_the_reason(make_index, tmp_path):
    root = tmp_path / "src"
    write(root, "public/_acl.yaml", "acl: {groups: [everyone]}\n")
    write(root, "public/ok.md", "# Ok\nfine")
    secret = write(tmp_path / "elsewhere", "secret.md", "# Secret\nthe okapi code is 7")
    os.symlink(secret, root / "public" / "absolute.md")
    os.symlink(Path("..") / ".." / "elsewhere" / "secret.md", root / "public" / "relative.md")
    os.symlink(root / "public" / "missing.md", root / "public" / "dangling.md")
    os.symlink(tmp_path / "elsewhere", root / "public" / "folder")  # a linked folder is not walked
    index = make_index(SourceConfig(name="s", path=root))
    report = index.sync()
    reasons = {f.path: f.reason for f in report.failed}
    assert "outside the source folder" in reasons["public/absolute.md"]
    assert "outside the source folder" in reasons["public/relative.md"]
    assert "broken or looping symlink" in reasons["public/dangling.md"]
    assert set(index.store.doc_points()) == {"s:public/ok.md"}
    admin = AccessScope.of("root", admin=True)
    assert all("okapi" not in p.text for p in index.search("okapi code", admin, top_k=10))


def test_a_link_that_later_leaves_the_source_is_removed_from_the_index(make_index, tmp_path):
    root = tmp_path / "src"
    write(root, "_acl.yaml", "acl: {groups: [everyone]}\n")
    inside = write(root, "real.md", "# Real\nthe heron schedule")
    link = root / "link.md"
    os.symlink(inside.name, link)
    index = make_index(SourceConfig(name="s", path=root))
    index.sync()
    assert "s:link.md" in index.store.doc_points()
    link.unlink()
    os.symlink(write(tmp_path / "out", "x.md", "# X\nsecret heron").resolve(), link)
    report = index.sync()
    assert [f.path for f in report.failed] == ["link.md"]
    assert set(index.store.doc_points()) == {"s:real.md"}


def _modes(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in [*dirs, *files, "."]:
            path = Path(dirpath, name)
            if not path.is_symlink():
                out[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return out


def test_the_embedded_index_and_its_state_are_owner_only(make_index, small_policies, tmp_path):
    old = os.umask(0o022)  # what a default shell gives: 0644 files, 0755 folders
    try:
        index = make_index(SourceConfig(name="policies", path=small_policies), data_dir=tmp_path / "data")
        index.sync()
        index.close()
    finally:
        os.umask(old)
    for folder in (index.store_path, index.state_dir):
        modes = _modes(folder)
        assert any(name.endswith(".json") or "wal" in name for name in modes)
        loose = {name: oct(mode) for name, mode in modes.items() if mode & 0o077}
        assert loose == {}, f"{folder}: readable by others: {loose}"
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_an_index_left_world_readable_is_tightened_when_opened(make_index, small_policies, tmp_path):
    data = tmp_path / "data"
    index = make_index(SourceConfig(name="policies", path=small_policies), data_dir=data)
    index.sync()
    index.close()
    for dirpath, _dirs, files in os.walk(index.store_path):  # as an older Carafe left it
        os.chmod(dirpath, 0o755)
        for name in files:
            os.chmod(os.path.join(dirpath, name), 0o644)
    reopened = make_index(SourceConfig(name="policies", path=small_policies), data_dir=data)
    assert reopened.store.count() > 0
    assert {oct(m) for m in _modes(index.store_path).values() if m & 0o077} == set()
