"""Admission: how much work one request may ask of the gateway, and how many
generations may run at once.

Why: a requests-per-minute limit counts requests, not work. One ``/v1/completions``
could ask for 64 prompts × ``n`` 8 = 512 generations, one ``/v1/embeddings`` for
2,048 × 2,000 characters, and a long prompt was templated and tokenized on the event
loop before any length check (issue 29, M6). So the cheap checks here — counts and
characters, no tokenizer — run before any templating, tokenizing, guard or engine
call, each refusal naming the field and the setting that limits it; and a request
holds a :class:`Lease` on generation slots (per key and in all) until its last
engine stream closed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from carafe.errors import InvalidInput, RateLimited, TooLarge, Unavailable
from carafe.gateway.config import ServerConfig

RETRY_AFTER_S = 1.0  # generations are short; a client that waits a second usually gets a slot


def text_chars(value: Any) -> int:
    """Characters of every string in ``value`` (request models, lists, dicts), keys included."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, BaseModel):
        return sum(text_chars(getattr(value, name)) for name in type(value).model_fields)
    if isinstance(value, dict):
        return sum(text_chars(k) + text_chars(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(text_chars(v) for v in value)
    return 0


def check_chars(value: Any, *, param: str, server: ServerConfig) -> None:
    """413 naming ``param`` when the text in ``value`` is over ``server.max_prompt_chars``."""
    chars = text_chars(value)
    if chars > server.max_prompt_chars:
        raise TooLarge(
            f"{param} holds {chars} characters; the limit is {server.max_prompt_chars} "
            "(server.max_prompt_chars): shorten the input",
            param=param,
            code="input_too_large",
        )


def check_messages(messages: list[Any], server: ServerConfig, *, param: str = "messages") -> None:
    """The message count (400) and their characters (413), before any templating."""
    if len(messages) > server.max_messages:
        raise InvalidInput(
            f"{param} has {len(messages)} items; the limit is {server.max_messages} (server.max_messages)",
            param=param,
            code="too_many_messages",
        )
    check_chars(messages, param=param, server=server)


def check_generations(prompts: int, n: int, server: ServerConfig) -> int:
    """Prompts × ``n`` = the engine generations one request starts (400 naming ``n`` beyond the cap)."""
    total = prompts * n
    if total > server.max_generations_per_request:
        raise InvalidInput(
            f"{prompts} prompt(s) × n={n} asks for {total} generations; the limit is "
            f"{server.max_generations_per_request} per request (server.max_generations_per_request)",
            param="n" if n > 1 else "prompt",
            code="too_many_generations",
        )
    return total


def check_embedding_input(texts: list[str], server: ServerConfig) -> None:
    """The number of inputs (400) and their characters together (413), before any tokenizing."""
    if len(texts) > server.max_embedding_inputs:
        raise InvalidInput(
            f"input has {len(texts)} items; the limit is {server.max_embedding_inputs} per request "
            "(server.max_embedding_inputs)",
            param="input",
            code="too_many_inputs",
        )
    chars = sum(len(t) for t in texts)
    if chars > server.max_embedding_chars:
        raise TooLarge(
            f"input holds {chars} characters; the limit is {server.max_embedding_chars} per request "
            "(server.max_embedding_chars)",
            param="input",
            code="input_too_large",
        )


@dataclass
class Lease:
    """``count`` generation slots held for one request; released once, whatever happens."""

    slots: GenerationSlots
    key_id: str
    count: int
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.slots.give_back(self.key_id, self.count)


class GenerationSlots:
    """Generations running now, per key (429 beyond ``per_key``) and in all (503 beyond ``total``).

    Only the event loop touches it, so plain counters are enough.
    """

    def __init__(self, per_key: int, total: int) -> None:
        self.per_key, self.total = per_key, total
        self.by_key: dict[str, int] = {}
        self.running = 0

    @classmethod
    def from_config(cls, server: ServerConfig) -> GenerationSlots:
        return cls(server.max_inflight_per_key, server.max_concurrent_generations)

    def acquire(self, key_id: str, count: int) -> Lease:
        if count > min(self.per_key, self.total):  # could never run: waiting would not help
            raise InvalidInput(
                f"the request asks for {count} generations; at most {min(self.per_key, self.total)} may run at once "
                "(server.max_inflight_per_key, server.max_concurrent_generations)",
                param="n",
                code="too_many_generations",
            )
        mine = self.by_key.get(key_id, 0)
        if mine + count > self.per_key:
            raise RateLimited(
                f"this key already runs {mine} generation(s) and the request asks for {count} more; at most "
                f"{self.per_key} may run at once per key (server.max_inflight_per_key): retry when one finished",
                retry_after=RETRY_AFTER_S,
                code="too_many_in_flight",
            )
        if self.running + count > self.total:
            raise Unavailable(
                f"the gateway runs {self.running} generations, its limit is {self.total} "
                "(server.max_concurrent_generations): retry shortly",
                code="server_busy",
            )
        self.by_key[key_id] = mine + count
        self.running += count
        return Lease(self, key_id, count)

    def give_back(self, key_id: str, count: int) -> None:
        left = self.by_key.get(key_id, 0) - count
        if left > 0:
            self.by_key[key_id] = left
        else:
            self.by_key.pop(key_id, None)
        self.running = max(0, self.running - count)

    def in_flight(self, key_ids: Iterable[str] | None = None) -> int:
        """Generations running now (for one set of keys, or in all)."""
        return self.running if key_ids is None else sum(self.by_key.get(k, 0) for k in key_ids)
