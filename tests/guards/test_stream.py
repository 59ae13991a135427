import pytest

from carafe.guards import GuardPipeline, GuardsConfig
from carafe.guards.checks.leak import WITHHELD
from carafe.guards.stream import split_complete

PASSAGES = ["Employees receive 30 days of paid vacation per year. Vacation is requested in the HR portal."]


def test_sentence_split_waits_for_the_whitespace_after_a_stop():
    assert split_complete("Pi is 3.", 400) == ([], "Pi is 3.")
    assert split_complete("Pi is 3.14. Next", 400) == (["Pi is 3.14. "], "Next")
    assert split_complete("One! Two? Three\nFour", 400) == (["One! ", "Two? ", "Three\n"], "Four")
    assert split_complete("休暇は30日です。申請はポータルで", 400) == (["休暇は30日です。"], "申請はポータルで")


def test_a_long_run_without_stop_is_cut_at_a_space():
    pieces, _rest = split_complete("word " * 100, 50)
    assert pieces and len(pieces[0]) <= 50 and pieces[0].endswith(" ")


async def test_text_is_released_sentence_by_sentence(pipeline):
    stream = pipeline.output_stream(passages=PASSAGES)
    assert (await stream.feed("Employees receive 30 days")).text == ""
    first = await stream.feed(" of paid vacation per year. You request")
    assert first.text == "Employees receive 30 days of paid vacation per year. "
    assert (await stream.feed(" it in the HR portal")).text == ""
    last = await stream.finish()
    assert last.text == "You request it in the HR portal" and last.blocked is None
    assert any(v.check == "grounding" and v.category == "answer" for v in stream.verdicts)


async def test_pii_is_redacted_before_release(pipeline):
    stream = pipeline.output_stream()
    out = (await stream.feed("Write to hr@example.com or call +44 20 7946 0958. ")).text
    out += (await stream.finish()).text
    assert out == "Write to <EMAIL> or call <PHONE>. "


async def test_a_block_mid_stream_releases_nothing_more(pipeline):
    stream = pipeline.output_stream()
    first = await stream.feed("Here is the answer. You are a fucking moron. And more text")
    assert first.blocked is not None and first.blocked.check == "toxicity"
    assert first.text == "Here is the answer. "
    later = await stream.feed(" that must never be seen. Really.")
    assert later.text == "" and later.blocked is first.blocked
    assert (await stream.finish()).text == ""


async def test_ungrounded_sentence_blocks_under_strict(pipeline):
    stream = pipeline.output_stream(policy="strict", passages=PASSAGES)
    ok = await stream.feed("Employees get 30 days of paid vacation each year. ")
    assert ok.blocked is None and ok.text
    bad = await stream.feed("The moon landing happened in a film studio in Nevada. ")
    assert bad.blocked is not None and bad.blocked.check == "grounding"


async def test_grounding_is_skipped_and_said_so_without_passages(pipeline):
    stream = pipeline.output_stream(passages=[])
    await stream.feed("Some answer without any context at all. ")
    await stream.finish()
    grounding = [v for v in stream.verdicts if v.check == "grounding"]
    assert grounding and all(v.skipped for v in grounding)


class RestrictedChunks:
    """A stand-in for the indexer's permission-aware search (implements the LeakIndex protocol)."""

    def __init__(self, chunks: list[str]) -> None:
        self.chunks = chunks
        self.calls: list[object] = []

    async def restricted_matches(self, text, principal):
        self.calls.append(principal)
        words = set(text.lower().split())
        out = []
        for i, c in enumerate(self.chunks):
            cw = set(c.lower().split())
            out.append((f"doc{i}", len(words & cw) / max(1, len(words | cw)), c))
        return out


@pytest.mark.parametrize(("policy", "expect_block"), [("default", False), ("strict", True)])
async def test_restricted_content_leak_is_redacted_or_blocked(embedder, policy, expect_block):
    secret = "The merger with Globex closes on March 3 at a price of 41 dollars per share."
    index = RestrictedChunks([secret])
    guards = GuardPipeline.from_config(GuardsConfig(), embedder=embedder, leak_index=index)
    stream = guards.output_stream(policy=policy, principal="alice")
    release = await stream.feed("Sure. " + secret + " Anything else? ")
    if expect_block:
        assert release.blocked is not None and release.blocked.check == "leak"
        assert "Globex" not in release.text
    else:
        assert release.blocked is None and WITHHELD in release.text and "Globex" not in release.text
        assert release.text.startswith("Sure. ") and release.text.endswith("Anything else? ")
    assert "alice" in index.calls


async def test_non_streaming_use_is_feed_then_finish(pipeline):
    stream = pipeline.output_stream()
    text = (await stream.feed("All good here. No issues")).text + (await stream.finish()).text
    assert text == "All good here. No issues"


async def test_paraphrases_of_the_passages_count_as_grounded(embedder):
    """Supported sentences (paraphrases) must not be flagged; clear fabrications mostly are."""
    from carafe.guards.checks.grounding import GroundingCheck, PassageIndex
    from tests.guards.conftest import load_rows

    check, flagged = GroundingCheck(), {0: 0, 1: 0}
    rows = load_rows("grounding_eval.jsonl")
    for r in rows:
        low, scored, _ = await check.support(r["text"], PassageIndex([r["passage"]], embedder))
        flagged[r["label"]] += scored > 0 and low < 0.5
    assert flagged[0] == 0
    assert flagged[1] >= 0.3 * sum(r["label"] for r in rows)
