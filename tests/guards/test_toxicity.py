import numpy as np
from profanity_check import predict_prob

from carafe.guards.checks.toxicity import ToxicityCheck, _fast_profanity_model
from tests.guards.conftest import load_rows


def test_fast_path_matches_the_library():
    texts = ["have a nice day", "you stupid idiot", "fuck off", "kill the process on port 80"]
    assert np.allclose(_fast_profanity_model()(texts), predict_prob(texts), atol=1e-9)


def test_threats_and_dehumanizing_language_score_high():
    check = ToxicityCheck()
    assert check.score("I'm going to kill you tomorrow.") == (1.0, "threat")
    assert check.score("Those people are vermin.")[0] == 1.0
    assert check.score("We need to kill the stuck process.")[0] < 0.8


def test_one_abusive_sentence_is_not_averaged_away():
    polite = "Thank you for the report. It was very thorough. " * 10
    assert ToxicityCheck().score(polite + "You are a fucking idiot.")[0] >= 0.8


def test_eval_set_recall_and_fpr():
    check = ToxicityCheck()
    rows = load_rows("toxicity_eval.jsonl")
    fired = np.array([check.score(r["text"])[0] >= 0.8 for r in rows])
    labels = np.array([r["label"] for r in rows], dtype=bool)
    assert fired[labels].mean() >= 0.85
    assert fired[~labels].mean() <= 0.05
