"""Teachers: the models that write synthetic data. Any OpenAI-compatible endpoint, or the base model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from carafe.tuning.config import TeacherConfig
from carafe.tuning.errors import TeacherUnavailable
from carafe.tuning.prompts import Messages

if TYPE_CHECKING:
    from carafe.tuning.documents import Chunk
    from carafe.tuning.filters import Candidate
    from carafe.tuning.recipe import Recipe


class Teacher(Protocol):
    """Answers one chat request; raises TeacherUnavailable when it cannot be reached."""

    name: str

    async def complete(self, messages: Messages) -> str: ...


@runtime_checkable
class Amplifier(Protocol):
    """A teacher that writes a knowledge recipe's candidates itself, without chat calls (the offline one)."""

    def amplify(self, recipe: Recipe, chunks: list[Chunk]) -> list[Candidate]: ...


class OpenAITeacher:
    """A teacher behind an OpenAI-compatible API (vLLM, a Carafe gateway, a hosted model)."""

    def __init__(self, cfg: TeacherConfig) -> None:
        from openai import AsyncOpenAI

        assert cfg.endpoint
        self.cfg = cfg
        self.name = f"{cfg.model}@{cfg.endpoint}"
        # Retries are ours (they also cover junk answers), so the SDK's own are off.
        self.client = AsyncOpenAI(
            base_url=cfg.endpoint, api_key=cfg.api_key or "none", timeout=cfg.timeout_s, max_retries=0
        )

    async def complete(self, messages: Messages) -> str:
        import openai

        try:
            resp = await self.client.chat.completions.create(
                model=self.cfg.model,
                messages=messages,  # type: ignore[arg-type]
                temperature=self.cfg.temperature,
                max_tokens=self.cfg.max_tokens,
            )
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise TeacherUnavailable(f"teacher {self.name} cannot be reached: {exc}") from exc
        except openai.APIStatusError as exc:
            if exc.status_code >= 500 or exc.status_code == 429:
                raise TeacherUnavailable(f"teacher {self.name} failed with HTTP {exc.status_code}") from exc
            raise TeacherUnavailable(
                f"teacher {self.name} refused the request (HTTP {exc.status_code}): {exc.message}"
            ) from exc
        return resp.choices[0].message.content or "" if resp.choices else ""


class LocalTeacher:
    """The embedded base model as teacher: fine for local tries, too small for good data."""

    def __init__(self, cfg: TeacherConfig, models_dir: Path, base_model: str = "smollm2") -> None:
        from carafe.tuning.base_model import load_base

        self.cfg = cfg
        self.model, self.tokenizer, self.model_id = load_base(models_dir, model=base_model)
        self.name = f"local:{self.model_id}"
        self._lock = asyncio.Lock()

    def _generate(self, messages: Messages) -> str:
        import torch

        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            out = self.model.generate(
                **ids,
                max_new_tokens=self.cfg.max_tokens,
                do_sample=self.cfg.temperature > 0,
                temperature=max(self.cfg.temperature, 1e-3),
                pad_token_id=self.tokenizer.eos_token_id,
            )
        return self.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)

    async def complete(self, messages: Messages) -> str:
        async with self._lock:  # one CPU model: requests run one at a time off the event loop
            return await asyncio.to_thread(self._generate, messages)


def make_teacher(cfg: TeacherConfig, models_dir: Path, base_model: str = "smollm2") -> Teacher:
    """`endpoint`: an URL → OpenAITeacher; None or `offline` → the offline generator; `template` → the
    rule-based stand-in; `local` → the base model."""
    if cfg.endpoint in (None, "offline"):
        from carafe.tuning.amplify import OfflineTeacher

        return OfflineTeacher()
    if cfg.endpoint == "local":
        return LocalTeacher(cfg, models_dir, base_model)
    if cfg.endpoint == "template":
        from carafe.tuning.template_teacher import TemplateTeacher

        return TemplateTeacher()
    return OpenAITeacher(cfg)
