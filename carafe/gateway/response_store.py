"""Stored responses for ``previous_response_id``: the conversation so far, kept in
the state database for ``server.responses_retention_s`` so that any replica can
continue it, and only for the credential that made it (one API key or one IdP
subject — a new key with the same user name starts afresh)."""

from __future__ import annotations

import asyncio

from carafe.errors import NotFound
from carafe.gateway.protocol import ChatMessageIn
from carafe.state import Conversations


class ResponseStore:
    """Conversations by response id; another credential's id is not found (fail closed)."""

    def __init__(self, conversations: Conversations) -> None:
        self._conversations = conversations

    async def put(self, response_id: str, owner: str, messages: list[ChatMessageIn]) -> None:
        """Stored (committed) before this returns, so the next request may go to any replica."""
        dumped = [m.model_dump(mode="json", exclude_none=True) for m in messages]
        await asyncio.to_thread(self._conversations.put, response_id, owner, dumped)

    async def conversation(self, response_id: str, owner: str) -> list[ChatMessageIn]:
        found = await asyncio.to_thread(self._conversations.get, response_id, owner)
        if found is None:
            raise NotFound(
                f"no stored response {response_id!r} (unknown, expired after the retention, or made by another key)",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        return [ChatMessageIn.model_validate(m) for m in found]
