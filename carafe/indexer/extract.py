"""Plain text (and a title) out of Markdown, text, HTML and PDF files."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import yaml

from carafe.indexer.errors import DocumentRejected

SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster
SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".html": "html", ".htm": "html", ".pdf": "pdf"}
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.S)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


@dataclass
class Extracted:
    text: str
    title: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # front matter (Markdown only)


def _decode(data: bytes, name: str) -> str:
    if b"\x00" in data[:8192]:
        raise DocumentRejected(f"{name}: binary content (NUL bytes) in a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentRejected(f"{name}: not valid UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def split_front_matter(text: str, name: str) -> tuple[dict[str, Any], str]:
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        meta = yaml.load(match.group(1), Loader=SAFE_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""
        raise DocumentRejected(f"{name}: broken YAML front matter{where}: {getattr(exc, 'problem', exc)}") from exc
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise DocumentRejected(f"{name}: front matter must be a YAML mapping, got {type(meta).__name__}")
    return meta, text[match.end() :]


class _HtmlText(HTMLParser):
    _SKIP = frozenset({"script", "style", "head", "noscript", "template"})
    _BLOCK = frozenset({"p", "div", "li", "tr", "br", "section", "article", "table", "ul", "ol", "blockquote", "pre"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False
        self._heading: int | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self._SKIP:
            self._skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._heading = int(tag[1])
            self.parts.append("\n\n" + "#" * self._heading + " ")
        elif tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif re.fullmatch(r"h[1-6]", tag):
            self._heading = None
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(re.sub(r"\s+", " ", data) if self._heading is None else data.strip())


def _pdf_text(data: bytes, name: str) -> Extracted:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
        metadata: dict[str, Any] = dict(reader.metadata or {})
        title = str(metadata.get("/Title") or "")
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise DocumentRejected(f"{name}: unreadable PDF ({exc})") from exc
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    return Extracted(text=text, title=title)


def extract(path: Path, data: bytes) -> Extracted:
    """Text, title and front matter of one file; :class:`DocumentRejected` if it cannot be read."""
    kind = SUFFIXES.get(path.suffix.lower())
    name = path.name
    if kind == "pdf":
        if not data.startswith(b"%PDF"):
            raise DocumentRejected(f"{name}: unreadable PDF (no %PDF header)")
        out = _pdf_text(data, name)
    elif kind == "html":
        parser = _HtmlText()
        parser.feed(_decode(data, name))
        parser.close()
        lines = (line.strip() for line in "".join(parser.parts).splitlines())
        text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
        out = Extracted(text=text, title=parser.title.strip())
    elif kind in ("markdown", "text"):
        text = _decode(data, name)
        meta, body = split_front_matter(text, name) if kind == "markdown" else ({}, text)
        out = Extracted(text=body.strip(), meta=meta)
    else:
        raise DocumentRejected(f"{name}: unsupported file type {path.suffix!r}")
    if not out.title:
        heading = _HEADING.search(out.text)
        out.title = heading.group(1) if heading else path.stem.replace("-", " ").replace("_", " ")
    if isinstance(out.meta.get("title"), str) and out.meta["title"].strip():
        out.title = out.meta["title"].strip()
    if not out.text.strip():
        raise DocumentRejected(f"{name}: no text could be extracted (empty file, or a scanned PDF without text)")
    return out
