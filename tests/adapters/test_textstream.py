"""Incremental detokenization and stop strings, with the real tokenizer, token by token."""

from __future__ import annotations

from pathlib import Path

import pytest

from carafe.adapters.textstream import TextStream


@pytest.fixture(scope="module")
def tok(base_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_model_dir)


def feed(stream: TextStream, ids: list[int]) -> list[str]:
    pieces = [stream.push([t]) for t in ids]
    return [*pieces, stream.finish()]


@pytest.mark.parametrize("text", ["héllo wörld 👋🏽 ok", "日本語のテキスト", " spaced  out\n\nlines"])
def test_pieces_add_up_and_never_split_a_character(tok, text):
    ids = tok.encode(text, add_special_tokens=False)
    pieces = feed(TextStream(tok), ids)
    assert "".join(pieces) == tok.decode(ids)
    assert not any("\ufffd" in p for p in pieces)


def test_stop_string_across_tokens_is_cut_and_never_emitted(tok):
    text = "The answer is 42. END of story"
    pieces = feed(TextStream(tok, stop=["END"]), tok.encode(text, add_special_tokens=False))
    assert "".join(pieces) == "The answer is 42. "
    assert all("E" not in piece for piece in pieces)  # not even the stop string's first letter leaks


def test_text_that_only_looked_like_a_stop_string_is_released(tok):
    text = "an ENDless road"
    stream = TextStream(tok, stop=["END."])
    pieces = feed(stream, tok.encode(text, add_special_tokens=False))
    assert "".join(pieces) == text
    assert not stream.stopped


def test_earliest_of_several_stop_strings_wins(tok):
    stream = TextStream(tok, stop=["world", "lo w"])
    out = "".join(feed(stream, tok.encode("hello world", add_special_tokens=False)))
    assert out == "hel" and stream.stopped
