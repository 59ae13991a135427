"""The audit CSV export: one row per exposure or record, lists joined, and no cell a
spreadsheet would run as a formula (user names and document ids come from outside)."""

from __future__ import annotations

import csv
import io

from carafe.gateway.console.audit import CSV_FIELDS, to_csv


def test_rows_lists_and_formula_like_cells():
    text = to_csv(
        [
            {"user": '=HYPERLINK("http://x")', "times": 2, "versions": ["4", "5"]},
            {"user": "-1+1", "times": 1, "versions": []},
            {"user": "hana", "times": 1, "versions": ["5"]},
        ]
    )
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["user"] for r in rows] == ['\'=HYPERLINK("http://x")', "'-1+1", "hana"]
    assert [r["versions"] for r in rows] == ["4;5", "", "5"]


def test_an_empty_list_still_has_its_header():
    assert next(csv.reader(io.StringIO(to_csv([])))) == list(CSV_FIELDS)
