"""Chunks stay under the token budget and keep their section; BM25 terms match across inflections."""

from __future__ import annotations

from carafe.indexer.chunking import chunk_text, count_tokens
from carafe.indexer.sparse import Bm25, term_id, terms

DOC = (
    """# Handbook

Opening words.

## Annual leave

"""
    + " ".join(f"Sentence number {i} explains one more leave rule in detail." for i in range(80))
    + """

### Carry-over

Five days carry over.

## Sick leave

Call your manager before ten.
"""
)


def test_chunks_respect_the_budget_and_carry_their_heading_trail():
    chunks = chunk_text(DOC, max_tokens=80, overlap_tokens=12, title="Handbook")
    assert [c.number for c in chunks] == list(range(len(chunks)))
    assert all(count_tokens(c.text) <= 80 + 12 for c in chunks)  # budget plus the overlap lead
    leave = [c for c in chunks if c.heading == "Handbook > Annual leave"]
    assert len(leave) > 3 and all(c.text.startswith("Handbook > Annual leave\n") for c in leave)
    assert leave[1].text.split("\n")[1].startswith("… ")  # overlap from the previous chunk
    [carry] = [c for c in chunks if c.heading.endswith("Carry-over")]
    assert carry.heading == "Handbook > Annual leave > Carry-over" and "Five days" in carry.text
    joined = " ".join(c.text for c in chunks)
    assert all(f"Sentence number {i} " in joined for i in range(80))  # nothing dropped


def test_bm25_matches_inflections_and_drops_stopwords():
    assert terms("The policies of the employees") == terms("policy employee")
    bm25 = Bm25()
    doc = bm25.document("Parental leave policies: leave for parents")
    query = bm25.query("what is the parental leave policy")
    assert set(query.indices) <= set(doc.indices)
    weights = dict(zip(doc.indices, doc.values))
    [leave], [parental] = terms("leave"), terms("parental")
    assert weights[term_id(leave)] > weights[term_id(parental)]  # tf saturates but still counts
    assert bm25.query("the of and").indices == []
