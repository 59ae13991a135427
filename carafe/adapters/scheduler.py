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
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from carafe.adapters.errors import EngineOverloaded, EngineUnavailable
from carafe.adapters.prefix_cache import PrefixCache, PrefixHit
from carafe.adapters.request import BASE, Request
from carafe.adapters.sampling import sample_next
from carafe.errors import CarafeError

log = logging.getLogger("carafe.adapters.scheduler")


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
        max_waiting: int = 0,
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
        self._max_waiting = max_waiting  # requests queued beyond the running batch (0: no limit)
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
        self.heartbeat = time.monotonic()  # the worker loop's last turn (the supervisor watches it)
        self.failure: str | None = None  # why the engine cannot serve (set when it died or stalls)
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

    def stop(self, timeout: float = 5.0) -> None:
        """End the worker loop; requests still waiting or running fail at once (a stuck pass is not waited for
        beyond ``timeout``: the worker is a daemon thread and never holds the process)."""
        self._closing = True
        self._inbox.put(None)
        self.fail_all(EngineUnavailable("the engine was shut down"))
        self.join(timeout)

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` for a stopped worker to end its current pass."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def submit(self, request: Request) -> None:
        if self._closing:
            raise EngineUnavailable("the engine is shutting down")
        if self.failure is not None:
            raise EngineUnavailable(self.failure)
        if self._max_waiting and self.queued() >= self._max_waiting:
            raise EngineOverloaded(
                f"the engine has {self.queued()} requests waiting, its limit (adapters.engine.max_waiting); "
                "retry shortly",
                code="engine_queue_full",
            )
        self._inbox.put(request)
        if self.failure is not None:  # it died or stalled meanwhile: nobody may take the request
            request.fail(EngineUnavailable(self.failure))

    def queued(self) -> int:
        """Requests waiting for a row (not yet prefilling)."""
        return len(self._waiting) + self._inbox.qsize()

    def pending(self) -> list[Request]:
        """Every request not finished: running, being prefilled, waiting, or still in the inbox."""
        with self._inbox.mutex:
            inbox = [item for item in self._inbox.queue if isinstance(item, Request)]
        return [*self._in_flight(), *self._waiting, *inbox]

    def fail_all(self, exc: CarafeError) -> None:
        """Any thread: end every pending request with ``exc`` (the worker drops them at its next turn)."""
        for r in self.pending():
            r.fail(exc)

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
            "queue_depth": self.queued(),
        }

    def forget_prefixes(self, adapter: str | None) -> None:
        """Worker thread: drop stored prompt KV computed with ``adapter``."""
        if self.prefixes is not None:
            self.prefixes.forget(adapter)

    # ---- worker thread ---------------------------------------------------
    def _run(self) -> None:
        try:
            with torch.inference_mode():
                self._loop()
        except BaseException as exc:  # the loop itself broke: no request may wait for it
            log.exception("the engine's worker loop died")
            self.failure = f"the engine stopped ({type(exc).__name__}: {exc}); the gateway needs a restart"
            self.fail_all(EngineUnavailable(self.failure))
            self._end_control_calls(EngineUnavailable(self.failure))
            return
        self.fail_all(EngineUnavailable("the engine was shut down"))
        self._end_control_calls(EngineUnavailable("the engine was shut down"))
        for fut in (f for _, f in self._retiring.values()):
            fut.set_result(None)

    def _loop(self) -> None:
        while not self._closing:
            self.heartbeat = time.monotonic()
            self._pull(block=not self._in_flight() and not self._waiting)
            if self._closing:
                break
            self._drop_done()
            self._guarded_step()
            self._drop_done()
            self._finish_retirements()

    def _end_control_calls(self, exc: BaseException) -> None:
        """Control calls still in the inbox get ``exc`` instead of waiting forever."""
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, tuple) and not item[1].done():
                item[1].set_exception(exc)

    def _in_flight(self) -> list[Request]:
        """Requests holding model state: decoding, or being prefilled."""
        return [*self._rows, *(self._filling.rows if self._filling is not None else [])]

    def _guarded_step(self) -> None:
        """One step; one that fails in a way no row was blamed for fails the requests in flight, not the engine."""
        try:
            self._step()
        except Exception as exc:
            log.exception("engine step failed")
            self._fail(self._in_flight(), EngineUnavailable(f"generation failed: {exc}"))
            self._clear_batch()

    def _clear_batch(self) -> None:
        self._rows, self._cache, self._mask, self._filling = [], None, None, None

    def _step(self) -> None:
        """One prefill pass (or chunk of one), then one decode step of the running batch."""
        self._admit()
        if self._rows:
            self._decode()

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
            r.fail(exc)

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
            if r.cancelled or r.done:
                continue
            hit = self.prefixes.lookup(r.adapter, r.prompt_ids) if self.prefixes is not None else None
            if hit is None and not r.solo:
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
        if self._filling is not None and all(r.cancelled or r.done for r in self._filling.rows):
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
            self._retry_alone(fill.rows, exc)
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

    def _retry_alone(self, rows: list[Request], exc: Exception) -> None:
        """A prefill of several requests failed: each is tried again alone, so only the one at fault fails."""
        if len(rows) == 1:
            self._fail(rows, EngineUnavailable(f"generation failed: {exc}"))
            return
        for r in reversed(rows):
            r.solo = True
            self._waiting.appendleft(r)

    def _decode(self) -> None:
        assert self._mask is not None
        rows = self._rows
        ids = torch.tensor([[r.last_token] for r in rows], dtype=torch.long, device=self._device)
        mask = torch.cat([self._mask, self._mask.new_ones((len(rows), 1))], dim=1)
        try:
            logits = self._forward(
                rows,
                input_ids=ids,
                attention_mask=mask,
                position_ids=mask.sum(-1, keepdim=True) - 1,
                use_cache=True,
                **{self._cache_arg: self._cache},
            )
        except Exception as exc:
            log.exception("decode step failed")
            self._rewind(self._mask.shape[1])
            self._blame(rows, exc)
            return
        self._mask = mask
        self.counters["steps"] += 1
        self._accept(rows, sample_next(logits[:, -1, :], [r.sampler for r in rows]))

    def _rewind(self, width: int) -> None:
        """The batch cache back to ``width`` columns: a failed pass may have appended to some layers."""
        assert self._cache is not None
        layer: Any
        for layer in self._cache.layers:
            if layer.keys is not None and layer.keys.shape[-2] > width:
                layer.keys = layer.keys[:, :, :width]
            if layer.values is not None and layer.values.shape[-2] > width:
                layer.values = layer.values[:, :, :width]

    def _blame(self, rows: list[Request], exc: Exception) -> None:
        """A decode pass failed: run each row's text alone to find the rows at fault; they fail and the others
        decode this step again next turn. If no row fails alone, the pass failed as a whole: all of them fail."""
        faulty = [r for r in rows if len(rows) > 1 and self._fails_alone(r)]
        self._fail(faulty or rows, EngineUnavailable(f"generation failed: {exc}"))

    def _fails_alone(self, r: Request) -> bool:
        ids = torch.tensor([r.prompt_ids + r.sampler.output_ids], dtype=torch.long, device=self._device)
        cache = self.model.new_cache() if self._lean else DynamicCache(config=self._config)
        try:
            self._forward(
                [r],
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                position_ids=torch.arange(ids.shape[1], device=self._device).unsqueeze(0),
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_arg: cache},
            )
        except Exception:
            return True
        return False

    def _accept(self, rows: list[Request], tokens: list[int | CarafeError]) -> None:
        """Record each row's new token, stream its text, and mark finished rows (a row whose token could not be
        drawn fails alone)."""
        self.counters["tokens_generated"] += sum(isinstance(t, int) for t in tokens)
        for r, token in zip(rows, tokens):
            if r.advance(token):
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
