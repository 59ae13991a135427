"""Turning a growing list of token ids into streamed text, with stop strings applied.

Byte-level BPE tokens may end in the middle of a UTF-8 character: the decoded tail
is then ``"\\ufffd"`` and is held back until the next token completes it. Text that
could be the start of a stop string is held back too, until it either becomes the
stop string (the stream ends before it) or cannot anymore (it is released), so no
chunk ever contains any part of a stop string.
"""

from __future__ import annotations

from typing import Any


class TextStream:
    """Incremental decoder for one request's output tokens."""

    def __init__(self, tokenizer: Any, stop: list[str] | None = None) -> None:
        self._tok = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # decode window: ids[_prefix:_read] is already turned into text
        self._read = 0
        self._stop = [s for s in (stop or []) if s]
        self._held = ""  # decoded, not yet emitted (could begin a stop string)
        self.text = ""  # everything emitted so far
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))

    def _new_text(self, final: bool) -> str:
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        full = self._decode(self._ids[self._prefix :])
        if len(full) > len(prefix_text) and (final or not full.endswith("\ufffd")):
            self._prefix, self._read = self._read, len(self._ids)
            return full[len(prefix_text) :]
        return ""

    def push(self, token_ids: list[int]) -> str:
        """Add tokens; returns the text that may be emitted now (possibly empty).

        After a stop string is found, ``stopped`` is set and later pushes return "".
        """
        if self.stopped:
            return ""
        self._ids.extend(token_ids)
        return self._release(self._new_text(final=False), final=False)

    def finish(self) -> str:
        """The stream ended (EOS, length, stop token): flush everything held back."""
        if self.stopped:
            return ""
        return self._release(self._new_text(final=True), final=True)

    def _release(self, new: str, *, final: bool) -> str:
        buf = self._held + new
        if self._stop:
            hits = [(i, s) for s in self._stop if (i := buf.find(s)) >= 0]
            if hits:
                cut = min(i for i, _ in hits)
                self.stopped = True
                self._held = ""
                self.text += buf[:cut]
                return buf[:cut]
        keep = 0 if final else self._stop_prefix_len(buf)
        out, self._held = buf[: len(buf) - keep], buf[len(buf) - keep :]
        self.text += out
        return out

    def _stop_prefix_len(self, buf: str) -> int:
        """Length of the longest suffix of ``buf`` that is a proper prefix of a stop string."""
        best = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(buf)), best, -1):
                if buf.endswith(s[:n]):
                    best = n
                    break
        return best
