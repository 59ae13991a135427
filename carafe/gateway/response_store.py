"""Stored responses for ``previous_response_id``: the conversation so far, kept in
memory for ``server.responses_retention_s`` and only for the key's user that made it."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from carafe.errors import NotFound
from carafe.gateway.protocol import ChatMessageIn


@dataclass(frozen=True)
class StoredResponse:
    owner: str
    messages: list[ChatMessageIn]  # the whole conversation, the response's output last
    expires: float


class ResponseStore:
    """An LRU of conversations with a time to live; another user's id is not found (fail closed)."""

    def __init__(self, retention_s: float, max_items: int) -> None:
        self._ttl = retention_s
        self._max = max_items
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, response_id: str, owner: str, messages: list[ChatMessageIn]) -> None:
        if self._ttl <= 0 or self._max <= 0:
            return
        with self._lock:
            self._items[response_id] = StoredResponse(owner, messages, time.monotonic() + self._ttl)
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def conversation(self, response_id: str, owner: str) -> list[ChatMessageIn]:
        with self._lock:
            item = self._items.get(response_id)
            if item is not None and item.expires < time.monotonic():
                del self._items[response_id]
                item = None
        if item is None or item.owner != owner:
            raise NotFound(
                f"no stored response {response_id!r} (unknown, expired after the retention, or made by another key)",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        return list(item.messages)
