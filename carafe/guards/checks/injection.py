"""Prompt injection / jailbreak check: rule families in eight languages (also on
decoded payloads) plus the fitted n-gram classifier (see carafe.guards.classifier).

The classifier reads the whole normalized text in overlapping windows, and also
the decoded views of an obfuscated one (leetspeak, base64), so neither padding nor
encoding moves an attack out of its view."""

from __future__ import annotations

from pathlib import Path

from carafe.guards.checks import Subject, decide, off_loop
from carafe.guards.checks.injection_rules import RuleHit, decoded_payloads, match_rules
from carafe.guards.classifier import NgramClassifier, load_ngram
from carafe.guards.config import CheckSettings
from carafe.guards.registry import CheckContext, register
from carafe.guards.verdict import GuardVerdict

RULE_SCORE = 0.97
CLASSIFIED_VIEWS = ("leet", "base64", "hex")  # decoded views the classifier reads too (rot13 is for the rules)
# System and developer turns legitimately say "You are ...", and assistant turns are model output (or a
# forged one): the rules read them, the classifier, fitted on what people type, does not (its false
# positives there would refuse ordinary applications and end conversations).
RULES_ONLY_ROLES = frozenset({"system", "developer", "assistant"})


class InjectionCheck:
    """Score = rule hit, else the classifier's highest probability over the text's
    windows and decoded views; category names the family."""

    name = "injection"
    cost = 3
    protects_data = True

    def __init__(self, model: NgramClassifier | None = None) -> None:
        self.model = model or load_ngram()

    def score(self, normalized: str) -> float:
        """The classifier's score of ``normalized`` (whole length, and its decoded views)."""
        views = [normalized] + [text for how, text in decoded_payloads(normalized) if how in CLASSIFIED_VIEWS]
        return max(self.model.window_proba(v) for v in views)

    async def check(self, subject: Subject, settings: CheckSettings) -> GuardVerdict:
        hit: RuleHit | None = await off_loop(len(subject.normalized), match_rules, subject.normalized)
        if hit is not None:
            via = "" if hit.via == "plain" else f" (in a {hit.via}-encoded payload)"
            lang = "" if hit.language == "en" else f" ({hit.language})"
            return decide(
                self.name,
                hit.family,
                RULE_SCORE,
                settings,
                f"the text matches the {hit.family.replace('_', ' ')} rules{lang}{via}",
                stage=subject.stage,
            )
        if subject.role in RULES_ONLY_ROLES:
            return GuardVerdict(
                check=self.name, category="none", stage=subject.stage, reason=f"rules only ({subject.role} turn)"
            )
        score = await off_loop(len(subject.normalized), self.score, subject.normalized)
        return decide(
            self.name,
            "classifier",
            score,
            settings,
            f"the injection classifier (n-grams) scores the text {score:.2f}",
            stage=subject.stage,
        )


@register("injection", stages=("input",))
def build(ctx: CheckContext) -> InjectionCheck:
    path = ctx.config.injection_model
    return InjectionCheck(load_ngram(Path(path).expanduser()) if path else None)
