"""Rewrite v1/v2 skill recipes as version 3, keeping every comment and line as it was.

Only lint v3 enforces and v1 did not is fixed beside the version (trailing spaces, the final newline).

The skills schemas differ only in `version` (v3 also wants 5 unique seeds and a task
description), so the rewrite sets that one key as a text edit; a file whose layout a text edit
cannot handle (a flow-style top mapping) is rewritten with ruamel.yaml, which keeps comments.
Knowledge v1/v2 cannot be converted mechanically: v3 groups Q&A under document contexts.
"""

from __future__ import annotations

import io
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from carafe.tuning.validate import Issue, latest_version, read_version, validate_file

_VERSION_LINE = re.compile(r"^version:[ \t]*[^\n#]*", re.MULTILINE)


@dataclass
class Conversion:
    """What `convert_recipe` did to one file, and what still keeps it from being valid v3."""

    file: str
    from_version: int
    changed: bool
    text: str
    remaining: list[Issue] = field(default_factory=list)
    refused: str | None = None

    @property
    def ok(self) -> bool:
        return self.refused is None and not any(i.severity == "error" for i in self.remaining)


def _text_edit(text: str, version: int) -> str:
    if _VERSION_LINE.search(text):
        return _VERSION_LINE.sub(f"version: {version}", text, count=1)
    lines = text.splitlines(keepends=True)
    head = 0
    while head < len(lines) and (lines[head].startswith(("#", "---")) or not lines[head].strip()):
        head += 1
    return "".join(lines[:head]) + f"version: {version}\n" + "".join(lines[head:])


def _ruamel_edit(text: str, version: int) -> str:
    from ruamel.yaml import YAML

    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096
    data = rt.load(text)
    if "version" in data:
        data["version"] = version
    else:
        data.insert(0, "version", version)
    out = io.StringIO()
    rt.dump(data, out)
    return out.getvalue()


def upgraded_text(text: str, version: int) -> str:
    """`text` with its top-level `version` set; everything else unchanged (checked by parsing both)."""
    before = yaml.safe_load(text)
    want = {**before, "version": version}
    edited = _text_edit(text, version)
    if _loads(edited) != want:
        edited = _ruamel_edit(text, version)
    # v1 is not linted upstream, v3 is: drop trailing spaces and end with a newline where that changes no value.
    tidy = "".join(line.rstrip() + "\n" for line in edited.splitlines())
    return tidy if _loads(tidy) == want else edited


def _loads(text: str) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def convert_recipe(path: Path, leaf: str, *, write: bool = True) -> Conversion:
    """Upgrade one recipe file to the latest schema version; validate the result as Carafe would."""
    text = path.read_text(encoding="utf-8")
    contents = yaml.safe_load(text)
    if not isinstance(contents, dict):
        return Conversion(str(path), 0, False, text, refused="not a mapping of keys to values")
    version, latest = read_version(contents), latest_version()
    if version >= latest and "version" in contents:
        return Conversion(str(path), version, False, text)
    if "document" in contents or leaf.startswith("knowledge/"):
        return Conversion(
            str(path),
            version,
            False,
            text,
            refused=(
                f"knowledge v{version} cannot be converted mechanically: v{latest} needs a domain, a document_outline "
                f"and "
                "seed_examples as 5 document contexts with 3 questions_and_answers each; rewrite it by hand"
            ),
        )
    new = upgraded_text(text, latest)
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / leaf / path.name
        probe.parent.mkdir(parents=True)
        probe.write_text(new, encoding="utf-8")
        _, issues = validate_file(probe, leaf, str(path))
    conversion = Conversion(str(path), version, new != text, new, issues)
    if write and conversion.ok:
        path.write_text(new, encoding="utf-8")
    return conversion
