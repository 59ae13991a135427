"""Model-based guard: asks a guardian model behind any OpenAI-compatible
endpoint (vLLM, TGI, Ollama) whether a prompt or answer is risky.

Two answer formats are understood: IBM Granite Guardian ("Yes"/"No", or
``<score> yes </score>`` in 3.3+; the risk is chosen with
``chat_template_kwargs.guardian_config.risk_name``) and Llama Guard 3
("safe" / "unsafe\\nS1,S10").
"""

from __future__ import annotations

import re

import httpx

from carafe.guards.checks import Subject, decide
from carafe.guards.config import CheckSettings, GuardianConfig
from carafe.guards.registry import CheckContext, register
from carafe.guards.verdict import GuardVerdict

_LLAMA_GUARD_CATEGORIES = {
    "S1": "violent_crimes",
    "S2": "non_violent_crimes",
    "S3": "sex_related_crimes",
    "S4": "child_sexual_exploitation",
    "S5": "defamation",
    "S6": "specialized_advice",
    "S7": "privacy",
    "S8": "intellectual_property",
    "S9": "indiscriminate_weapons",
    "S10": "hate",
    "S11": "suicide_self_harm",
    "S12": "sexual_content",
    "S13": "elections",
    "S14": "code_interpreter_abuse",
}


def build_request(cfg: GuardianConfig, text: str, stage: str) -> dict[str, object]:
    """The chat completion body for one check."""
    # Output checks send the answer as the assistant turn; the guardian then
    # judges the response rather than the prompt.
    messages = (
        [{"role": "user", "content": text}]
        if stage == "input"
        else [{"role": "user", "content": "(the user's request)"}, {"role": "assistant", "content": text}]
    )
    body: dict[str, object] = {"model": cfg.model, "messages": messages, "temperature": 0.0, "max_tokens": 20}
    if cfg.prompt_format == "granite_guardian":
        body["chat_template_kwargs"] = {"guardian_config": {"risk_name": cfg.risk}}
    return body


def parse_answer(cfg: GuardianConfig, answer: str) -> tuple[bool, str]:
    """(risky, category) from the guardian's reply."""
    text = answer.strip()
    if cfg.prompt_format == "llama_guard":
        lines = text.lower().split()
        if lines and lines[0] == "unsafe":
            codes = re.findall(r"S\d+", text.upper())
            return True, ",".join(_LLAMA_GUARD_CATEGORIES.get(c, c) for c in codes) or "unsafe"
        return False, "none"
    m = re.search(r"<score>\s*(yes|no)\s*</score>", text, re.IGNORECASE)
    word = (m.group(1) if m else text.split()[0] if text.split() else "").lower().strip(".,")
    return word == "yes", cfg.risk if word == "yes" else "none"


class GuardianCheck:
    """Off by default; errors yield an allowed verdict unless ``fail_closed``."""

    name = "guardian"
    cost = 9

    def __init__(self, cfg: GuardianConfig, client: httpx.AsyncClient | None = None) -> None:
        self.cfg = cfg
        self._client = client or httpx.AsyncClient(
            base_url=cfg.base_url.rstrip("/") + "/",
            timeout=cfg.timeout_s,
            headers={"Authorization": f"Bearer {cfg.api_key}"},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def check(self, subject: Subject, settings: CheckSettings) -> GuardVerdict:
        try:
            resp = await self._client.post(
                "chat/completions", json=build_request(self.cfg, subject.text, subject.stage)
            )
            resp.raise_for_status()
            answer = resp.json()["choices"][0]["message"]["content"] or ""
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            reason = (
                f"the guardian model at {self.cfg.base_url} could not be reached or answered badly: "
                f"{type(exc).__name__}"
            )
            if self.cfg.fail_closed:
                return GuardVerdict(
                    check=self.name,
                    category="unavailable",
                    action="block",
                    score=1.0,
                    reason=reason + " (fail closed)",
                    flagged=True,
                    stage=subject.stage,
                )
            return GuardVerdict(
                check=self.name, category="unavailable", reason=reason, skipped=True, stage=subject.stage
            )
        risky, category = parse_answer(self.cfg, answer)
        return decide(
            self.name,
            category,
            1.0 if risky else 0.0,
            settings,
            f"the guardian model ({self.cfg.prompt_format}) flags the text: {category}",
            stage=subject.stage,
        )


@register("guardian", stages=("input", "output"))
def build(ctx: CheckContext) -> GuardianCheck | None:
    return GuardianCheck(ctx.config.guardian) if ctx.config.guardian.enabled else None
