"""Carafe's validation side by side with InstructLab's own parser, file by file.

`instructlab.schema.taxonomy.TaxonomyParser(schema_version=0)` is what `ilab taxonomy diff`
runs: each file is read at the version its `version` key names (1 when absent).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from carafe.tuning.validate import find_recipe_files, leaf_of, validate_file


@dataclass(frozen=True)
class FileVerdict:
    """Whether each parser accepts one file, and why Carafe does not when it does not."""

    file: str
    upstream_ok: bool
    carafe_ok: bool
    upstream_errors: int
    carafe_errors: list[str]
    carafe_warnings: int

    @property
    def agree(self) -> bool:
        return self.upstream_ok == self.carafe_ok


@contextlib.contextmanager
def _quiet_with_yamllint() -> Iterator[None]:
    """The parser shells out to `yamllint`: put this interpreter's scripts first on PATH; mute its log."""
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + old
    log = logging.getLogger("instructlab.schema.taxonomy")
    level, log.level = log.level, logging.CRITICAL
    try:
        yield
    finally:
        os.environ["PATH"], log.level = old, level


def upstream_errors(path: Path) -> int:
    """Errors InstructLab's parser reports for one file (a file it cannot read counts as one)."""
    from instructlab.schema.taxonomy import TaxonomyParser, TaxonomyReadingException

    parser = TaxonomyParser(schema_version=0, message_format="logging")
    parser.yq_available = False  # yq only finds line numbers
    with _quiet_with_yamllint():
        try:
            return parser.parse(path).errors
        except TaxonomyReadingException:
            return 1


def compare(taxonomy: Path) -> list[FileVerdict]:
    """Both parsers' verdicts on every recipe file under `taxonomy`."""
    taxonomy = Path(taxonomy)
    out = []
    for f in find_recipe_files(taxonomy):
        _, issues = validate_file(f, leaf_of(f, taxonomy), str(f.relative_to(taxonomy)))
        errors = [str(i) for i in issues if i.severity == "error"]
        n = upstream_errors(f)
        out.append(
            FileVerdict(
                f.relative_to(taxonomy).as_posix(),
                n == 0,
                not errors,
                n,
                errors,
                sum(i.severity == "warning" for i in issues),
            )
        )
    return out
