"""Where a document's ACL comes from, and how bad files are refused with a reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from carafe.indexer.acl import AccessScope, Acl
from carafe.indexer.config import DefaultAcl, SourceConfig
from carafe.indexer.sources import Source
from tests.indexer.conftest import POLICIES, write


def scan(root: Path, **kw):
    docs, rejected = Source(SourceConfig(name="s", path=root, **kw)).scan()
    return {d.path: d for d in docs}, {r.path: r.reason for r in rejected}


def test_example_corpus_reads_every_file_with_an_acl():
    docs, rejected = scan(POLICIES)
    assert rejected == {}
    assert len(docs) >= 30
    assert {Path(p).suffix for p in docs} >= {".md", ".txt", ".html", ".pdf"}
    assert all(not d.acl.admins_only for d in docs.values())
    assert "expense claims up to 2,000 euros" in docs["finance/expense-approval-limits.pdf"].text
    assert docs["engineering/architecture-overview.html"].title == "Platform Architecture Overview"


def test_acl_precedence_front_matter_sidecar_folder_default(tmp_path):
    write(tmp_path, "_acl.yaml", "acl: {groups: [staff]}\nsensitivity: internal\n")
    write(tmp_path, "hr/_acl.yaml", "acl: {groups: [hr]}\nsensitivity: confidential\n")
    write(tmp_path, "hr/deep/inherited.md", "# Inherited\ntext")
    write(tmp_path, "hr/front.md", "---\nacl:\n  users: [ann]\nsensitivity: restricted\n---\n# Front\ntext")
    write(tmp_path, "hr/side.md", "# Side\ntext")
    write(tmp_path, "hr/side.md.acl.yaml", "acl: {groups: [payroll]}\n")
    write(tmp_path, "top.txt", "top level")
    docs, rejected = scan(tmp_path)
    assert rejected == {}
    assert docs["hr/deep/inherited.md"].acl == Acl(("hr",), (), "confidential")
    assert docs["hr/front.md"].acl == Acl((), ("ann",), "restricted")
    assert docs["hr/side.md"].acl.groups == ("payroll",)
    assert docs["top.txt"].acl.groups == ("staff",)


def test_no_acl_is_admins_only_unless_the_source_sets_a_default(tmp_path):
    write(tmp_path, "plain.md", "# Plain\nno acl anywhere")
    docs, _ = scan(tmp_path)
    acl = docs["plain.md"].acl
    assert acl.admins_only
    assert not AccessScope.of("bob", ["employees"]).may_read(acl)
    assert AccessScope.of("root", admin=True).may_read(acl)
    docs, _ = scan(tmp_path, default_acl=DefaultAcl(groups=["employees"]))
    assert docs["plain.md"].acl.groups == ("employees",)


def test_empty_group_list_matches_nobody():
    acl = Acl(groups=(), users=())
    assert not AccessScope.of("", []).may_read(acl)
    assert not AccessScope.of("", []).may_read(Acl(groups=("hr",)))


def test_bad_files_are_reported_with_file_and_reason_and_the_rest_proceeds(tmp_path):
    write(tmp_path, "good.md", "# Good\nfine")
    write(tmp_path, "broken-yaml.md", "---\nacl: [groups: hr\n---\n# Broken\n")
    (tmp_path / "junk.md").write_bytes(b"\x00\x01\x02binary\xff")
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (tmp_path / "big.txt").write_bytes(b"a" * 2048)
    write(tmp_path, "unknown.md", "---\nacl: {groups: [martians]}\n---\ntext")
    write(tmp_path, "sub/_acl.yaml", "acl: {groups: [x]\n")  # broken folder default: fail closed
    write(tmp_path, "sub/doc.md", "# Doc\ntext")
    outside = tmp_path.parent / "outside-secret.md"
    outside.write_text("# Secret\nnot in the source")
    os.symlink(outside, tmp_path / "escape.md")
    docs, rejected = Source(SourceConfig(name="s", path=tmp_path, known_groups=["hr", "x"]), max_file_bytes=1024).scan()
    assert [d.path for d in docs] == ["good.md"]
    reasons = {r.path: r.reason for r in rejected}
    assert "broken YAML front matter" in reasons["broken-yaml.md"]
    assert "binary" in reasons["junk.md"]
    assert "unreadable PDF" in reasons["bad.pdf"]
    assert "too large" in reasons["big.txt"]
    assert "martians" in reasons["unknown.md"]
    assert "broken YAML" in reasons["sub/doc.md"]
    assert "outside the source" in reasons["escape.md"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files without permission")
def test_unreadable_file_is_reported(tmp_path):
    path = write(tmp_path, "locked.md", "# Locked\n")
    path.chmod(0)
    try:
        _, rejected = scan(tmp_path)
    finally:
        path.chmod(0o644)
    assert "unreadable" in rejected["locked.md"]
