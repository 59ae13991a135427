"""Continuous batching: one worker thread owns the model and decodes every active
request together, one forward pass per step.

Requests that arrive while others decode are prefilled together (left-padded) and
their KV cache is merged into the running batch: both caches are padded on the left
to a common length, the attention mask marks the padding, and each row gets explicit
``position_ids`` counted from its mask. Finished or cancelled rows leave the batch at
once (``index_select`` on the cache) and leading all-padding columns are trimmed.
Adapter loads and unloads run on the same thread between steps, so they never race
a forward pass. Results go back to the event loop through a thread-safe callback.

Prefill is chunked (``prefill_chunk`` tokens per pass): a long RAG prompt is taken in
pieces with one decode step of the running streams between pieces, so their token
flow never freezes for a whole prefill. On the fast decoder a :class:`PrefixCache`
lets a prompt that starts like a recent one begin its prefill after the shared start.
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from carafe.adapters.engine import GenerationChunk, SamplingParams
from carafe.adapters.errors import EngineUnavailable
from carafe.adapters.prefix_cache import PrefixCache, PrefixHit
from carafe.adapters.sampling import RowSampler, sample_next
from carafe.adapters.textstream import TextStream

log = logging.getLogger("carafe.adapters.scheduler")
BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass(eq=False)
class Request:
    """One generation: its prompt, sampling state, text stream and where chunks go."""

    prompt_ids: list[int]
    params: SamplingParams
    sampler: RowSampler
    stream: TextStream
    emit: Callable[[GenerationChunk | BaseException], None]  # thread-safe hand-back
    adapter: str | None = None  # PEFT adapter name inside the model; None = base
    max_len: int = 2048
    cancelled: bool = False  # set from the event loop when the client goes away
    done: bool = False
    last_token: int = 0
    pending_ids: list[int] = field(default_factory=list)
    kv: Any = None  # the request's own KV (a native row, :class:`~carafe.adapters.kv_rows.RowKV`)


@dataclass(eq=False)
class _Fill:
    """Requests being prefilled together, ``done`` of their (left-padded) columns so far."""

    rows: list[Request]
    ids: torch.Tensor
    mask: torch.Tensor
    cache: Any
    done: int = 0


def _pad_left(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    if n == 0:
        return t
    shape = list(t.shape)
    shape[dim] = n
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class Scheduler:
    """The worker thread and the running batch."""

    def __init__(
        self,
        model: Any,
        config: Any,
        *,
        device: torch.device,
        pad_id: int,
        max_batch_size: int,
        batch_wait_s: float,
        prefill_chunk: int = 0,
        prefix_cache_tokens: int = 0,
    ) -> None:
        self.model = model  # swapped (base <-> PeftModel) by control calls on this thread
        self.peft = False
        # transformers 5.x renamed the cache argument; take whichever the model accepts
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._config = config
        self._device = device
        self._pad_id = pad_id
        self._max_batch = max_batch_size
        self._batch_wait_s = batch_wait_s
        self._chunk = prefill_chunk
        self._filling: _Fill | None = None
        # the fast decoder's cache can be seeded with stored KV; transformers' cache is left alone
        # a hit may end anywhere where a prompt's cut does not change its tokens, else on a chunk boundary
        align = 1 if getattr(model, "split_exact", False) else prefill_chunk
        self.prefixes = PrefixCache(prefix_cache_tokens, align) if prefix_cache_tokens and self._lean else None
        self._inbox: queue.Queue[Request | tuple[Callable[[], Any], Future[Any]] | None] = queue.Queue()
        self._waiting: deque[Request] = deque()
        self._rows: list[Request] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None
        self._retiring: dict[str, tuple[Callable[[], None], Future[Any]]] = {}
        self._thread: threading.Thread | None = None
        self._closing = False
        self.counters = {
            "steps": 0,
            "prefills": 0,
            "prefill_chunks": 0,
            "prefix_hits": 0,
            "prefix_tokens_reused": 0,
            "tokens_generated": 0,
            "requests_finished": 0,
            "requests_cancelled": 0,
        }

    @property
    def _lean(self) -> bool:
        """The model is the fast decoder (one adapter name per row, its own KV cache)."""
        return bool(getattr(self.model, "takes_adapter_names", False))

    # ---- event-loop side -------------------------------------------------
    def run(self) -> None:
        """Run the worker loop on the calling thread (the one that loaded the model) until :meth:`stop`."""
        self._thread = threading.current_thread()
        self._run()

    def stop(self, timeout: float = 30.0) -> None:
        self._closing = True
        self._inbox.put(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None

    def submit(self, request: Request) -> None:
        if self._closing:
            raise EngineUnavailable("the engine is shutting down")
        self._inbox.put(request)

    def call(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn`` on the worker thread between two steps."""
        fut: Future[Any] = Future[Any]()
        self._inbox.put((fn, fut))
        return fut

    def retire(self, adapter: str, delete: Callable[[], None]) -> Future[Any]:
        """Run ``delete`` once no queued or running request uses ``adapter``."""
        fut: Future[Any] = Future[Any]()
        self._inbox.put((lambda: self._retiring.__setitem__(adapter, (delete, fut)), Future()))
        return fut

    def stats(self) -> dict[str, int]:
        return {
            **self.counters,
            "active_rows": len(self._in_flight()),
            "queue_depth": len(self._waiting) + self._inbox.qsize(),
        }

    def forget_prefixes(self, adapter: str | None) -> None:
        """Worker thread: drop stored prompt KV computed with ``adapter``."""
        if self.prefixes is not None:
            self.prefixes.forget(adapter)

    # ---- worker thread ---------------------------------------------------
    def _run(self) -> None:
        with torch.inference_mode():
            while not self._closing:
                self._pull(block=not self._in_flight() and not self._waiting)
                if self._closing:
                    break
                self._drop_done()
                self._step()
                self._drop_done()
                self._finish_retirements()
        self._fail([*self._in_flight(), *self._waiting], EngineUnavailable("the engine was shut down"))
        for fut in (f for _, f in self._retiring.values()):
            fut.set_result(None)

    def _in_flight(self) -> list[Request]:
        """Requests holding model state: decoding, or being prefilled."""
        return [*self._rows, *(self._filling.rows if self._filling is not None else [])]

    def _step(self) -> None:
        """One prefill pass (or chunk of one), then one decode step of the running batch."""
        try:
            self._admit()
            if self._rows:
                self._decode()
        except Exception as exc:  # a failed step fails its requests, not the engine
            log.exception("engine step failed")
            self._fail(self._rows, EngineUnavailable(f"generation failed: {exc}"))
            self._rows, self._cache, self._mask = [], None, None

    def _pull(self, *, block: bool) -> None:
        """Move everything from the inbox: requests to the wait line, control calls run now."""
        timeout = 0.5 if block else None
        while True:
            try:
                item = self._inbox.get(block=block, timeout=timeout)
            except queue.Empty:
                return
            if item is None:
                return
            if isinstance(item, Request):
                self._waiting.append(item)
                if block and self._batch_wait_s:  # idle: give simultaneous arrivals a moment to join
                    time.sleep(self._batch_wait_s)
            else:
                fn, fut = item
                try:
                    fut.set_result(fn())
                except BaseException as exc:
                    fut.set_exception(exc)
            block = False

    def _fail(self, requests: list[Request], exc: BaseException) -> None:
        for r in requests:
            if not r.cancelled and not r.done:
                r.done = True
                r.emit(exc)

    def _forward(self, rows: list[Request], **kw: Any) -> torch.Tensor:
        names = {r.adapter for r in rows}
        if self._lean:
            return self.model(**kw, adapter_names=[r.adapter or BASE for r in rows]).logits  # type: ignore[no-any-return]  # torch/transformers typing
        if not self.peft:
            return self.model(**kw).logits  # type: ignore[no-any-return]  # torch/transformers typing
        if names == {None}:
            # base rows through the mixed path: no toggling of every LoRA layer on and off per step
            return self.model(**kw, adapter_names=[BASE] * len(rows)).logits  # type: ignore[no-any-return]  # torch/transformers typing
        if len(names) == 1:
            (name,) = names
            if self.model.active_adapter != name:
                self.model.set_adapter(name)
            return self.model(**kw).logits  # type: ignore[no-any-return]  # torch/transformers typing
        return self.model(**kw, adapter_names=[r.adapter or BASE for r in rows]).logits  # type: ignore[no-any-return]  # torch/transformers typing

    def _take_new(self) -> tuple[list[Request], PrefixHit | None]:
        """The next requests to prefill together: up to the free rows, or one with a prefix hit alone."""
        room = self._max_batch - len(self._rows)
        new: list[Request] = []
        while self._waiting and len(new) < room:
            r = self._waiting.popleft()
            if r.cancelled:
                continue
            hit = self.prefixes.lookup(r.adapter, r.prompt_ids) if self.prefixes is not None else None
            if hit is None:
                new.append(r)
            elif new:  # it starts its own prefill next
                self._waiting.appendleft(r)
                break
            else:
                return [r], hit
        return new, None

    def _start_fill(self, new: list[Request], hit: PrefixHit | None) -> _Fill:
        width = max(len(r.prompt_ids) for r in new)
        ids = torch.full((len(new), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(new), width), dtype=torch.long)
        for i, r in enumerate(new):
            ids[i, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids)
            mask[i, width - len(r.prompt_ids) :] = 1
        cache = self.model.new_cache() if self._lean else DynamicCache(config=self._config)
        fill = _Fill(new, ids.to(self._device), mask.to(self._device), cache)
        if hit is not None:
            for layer, (k, v) in zip(cache.layers, hit.kv):
                layer.keys, layer.values = k[:, :, : hit.length], v[:, :, : hit.length]
            fill.done = hit.length
            self.counters["prefix_hits"] += 1
            self.counters["prefix_tokens_reused"] += hit.length
        return fill

    def _admit(self) -> None:
        """One prefill pass: a chunk of the requests being prefilled (starting them if none are)."""
        if self._filling is not None and all(r.cancelled for r in self._filling.rows):
            self._filling = None
        if self._filling is None:
            new, hit = self._take_new()
            if not new:
                return
            self._filling = self._start_fill(new, hit)
        fill = self._filling
        width = fill.ids.shape[1]
        end = width if not self._chunk else min(width, fill.done + self._chunk)
        if width - end == 1:  # never leave a one-token pass: it would take the decode step's arithmetic
            end = width
        try:
            logits = self._forward(
                fill.rows,
                input_ids=fill.ids[:, fill.done : end],
                attention_mask=fill.mask[:, :end],
                position_ids=(fill.mask.cumsum(-1) - 1).clamp(min=0)[:, fill.done : end],
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_arg: fill.cache},
            )
        except Exception as exc:  # the new requests fail; the running batch goes on untouched
            log.exception("prefill failed")
            self._filling = None
            self._fail(fill.rows, EngineUnavailable(f"generation failed: {exc}"))
            return
        self.counters["prefill_chunks"] += 1
        fill.done = end
        if end < width:
            return
        self._filling = None
        self.counters["prefills"] += 1
        if self.prefixes is not None:
            for i, r in enumerate(fill.rows):
                if not self.prefixes.wants(r.prompt_ids):
                    continue
                pad = width - len(r.prompt_ids)
                self.prefixes.store(
                    r.adapter,
                    r.prompt_ids,
                    [
                        (x.keys[i : i + 1, :, pad:].clone(), x.values[i : i + 1, :, pad:].clone())
                        for x in fill.cache.layers
                    ],
                )
        self._merge(fill.rows, fill.cache, fill.mask)
        self._accept(fill.rows, sample_next(logits[:, -1, :], [r.sampler for r in fill.rows]))

    def _merge(self, new: list[Request], cache: DynamicCache, mask: torch.Tensor) -> None:
        if self._cache is None or self._mask is None:
            self._cache, self._mask, self._rows = cache, mask, list(new)
            return
        old_len, new_len = self._mask.shape[1], mask.shape[1]
        width = max(old_len, new_len)
        for old, add in zip(self._cache.layers, cache.layers):
            if self._lean:  # the fast decoder's KVLayer: one copy into a buffer with room to grow
                old.stack(add, width)  # type: ignore[union-attr]  # a KVLayer here, not transformers'
                continue
            old.keys = torch.cat([_pad_left(old.keys, width - old_len, -2), _pad_left(add.keys, width - new_len, -2)])  # type: ignore[arg-type,union-attr]  # torch/transformers typing
            old.values = torch.cat(  # type: ignore[union-attr]  # torch/transformers typing
                [_pad_left(old.values, width - old_len, -2), _pad_left(add.values, width - new_len, -2)]  # type: ignore[arg-type,union-attr]  # torch/transformers typing
            )
        self._mask = torch.cat([_pad_left(self._mask, width - old_len, 1), _pad_left(mask, width - new_len, 1)])
        self._rows.extend(new)

    def _decode(self) -> None:
        assert self._mask is not None
        rows = self._rows
        ids = torch.tensor([[r.last_token] for r in rows], dtype=torch.long, device=self._device)
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(rows), 1))], dim=1)
        logits = self._forward(
            rows,
            input_ids=ids,
            attention_mask=self._mask,
            position_ids=self._mask.sum(-1, keepdim=True) - 1,
            use_cache=True,
            **{self._cache_arg: self._cache},
        )
        self.counters["steps"] += 1
        self._accept(rows, sample_next(logits[:, -1, :], [r.sampler for r in rows]))

    def _accept(self, rows: list[Request], tokens: list[int]) -> None:
        """Record each row's new token, stream its text, and mark finished rows."""
        self.counters["tokens_generated"] += len(tokens)
        for r, token in zip(rows, tokens):
            if r.cancelled or r.done:
                continue
            r.sampler.output_ids.append(token)
            r.pending_ids.append(token)
            r.last_token = token
            n = len(r.sampler.output_ids)
            finish = None
            if r.sampler.is_stop_token(token):
                finish, text = "stop", r.stream.finish()
            else:
                text = r.stream.push([token])
                if r.stream.stopped:
                    finish = "stop"
                elif n >= r.params.max_tokens or len(r.prompt_ids) + n >= r.max_len:
                    finish = "length"
                    text += r.stream.finish()
            if not text and finish is None:
                continue
            r.emit(
                GenerationChunk(
                    text=text,
                    token_ids=r.pending_ids,
                    finish_reason=finish,  # type: ignore[arg-type]  # torch/transformers typing
                    prompt_tokens=len(r.prompt_ids),
                    completion_tokens=n,
                )
            )
            r.pending_ids = []
            if finish is not None:
                r.done = True
                self.counters["requests_finished"] += 1

    def _drop_done(self) -> None:
        """Remove finished and cancelled rows from the batch, then trim padding columns."""
        for r in self._rows:
            if r.cancelled and not r.done:
                r.done = True
                self.counters["requests_cancelled"] += 1
        keep = [i for i, r in enumerate(self._rows) if not r.done]
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._rows, self._cache, self._mask = [], None, None
            return
        assert self._cache is not None and self._mask is not None
        index = torch.tensor(keep, device=self._device)
        mask = self._mask.index_select(0, index)
        used = (mask.sum(0) > 0).nonzero()
        start = int(used[0]) if len(used) else 0
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, start:]  # type: ignore[union-attr]  # torch/transformers typing
            layer.values = layer.values.index_select(0, index)[:, :, start:]  # type: ignore[union-attr]  # torch/transformers typing
        self._mask = mask[:, start:]
        self._rows = [self._rows[i] for i in keep]

    def _finish_retirements(self) -> None:
        if not self._retiring:
            return
        busy = {r.adapter for r in (*self._in_flight(), *self._waiting) if not r.done and not r.cancelled}
        for name in [n for n in self._retiring if n not in busy]:
            delete, fut = self._retiring.pop(name)
            try:
                delete()
                fut.set_result(None)
            except BaseException as exc:
                fut.set_exception(exc)
