"""The in-process engine: transformers + PEFT, continuous batching, LoRA per row.

Model code runs only on the scheduler's worker thread (:mod:`carafe.adapters.scheduler`);
the async API tokenizes, validates, hands the request over and awaits chunks. A batch
may mix the base model and any resident adapters: PEFT applies each row's adapter in
the same forward pass (``adapter_names=[...]``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import AsyncIterator
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from carafe.adapters import gathered
from carafe.adapters.base_model import BaseModelFiles, pick_device, prepare_base_model, resolve_source
from carafe.adapters.config import EngineConfig
from carafe.adapters.cores import claim, compute_cores
from carafe.adapters.decoder import LlamaDecoder
from carafe.adapters.engine import AdapterInfo, ChatMessage, GenerationChunk, SamplingParams
from carafe.adapters.errors import (
    AdapterConflict,
    AdapterNotFound,
    EngineUnavailable,
    InvalidAdapter,
    ModelNotAvailable,
)
from carafe.adapters.lora_set import LoraWeights, read_lora
from carafe.adapters.peft_check import check_peft_dir
from carafe.adapters.request import Request
from carafe.adapters.row_scheduler import RowScheduler
from carafe.adapters.sampling import RowSampler
from carafe.adapters.scheduler import Scheduler
from carafe.adapters.structured import GrammarCompiler
from carafe.adapters.supervisor import Supervisor
from carafe.adapters.textstream import TextStream
from carafe.adapters.weights import TensorFiles
from carafe.errors import CarafeError, InvalidInput, TooLarge

log = logging.getLogger("carafe.adapters.local")


@dataclass(slots=True)
class _Resident:
    info: AdapterInfo
    internal: str  # PEFT adapter name (PEFT names may not contain dots)
    resolved: Path


class LocalEngine:
    """Serves the base model and LoRA adapters in this process (see :class:`Engine`)."""

    def __init__(self, config: EngineConfig | None = None, models_dir: Path | str = Path(".carafe/models")) -> None:
        self.config = config or EngineConfig()
        self.models_dir = Path(models_dir)
        device = pick_device(self.config.device)
        if self.config.quantize != "none" and device.type != "cpu":
            if self.config.device != "auto":
                raise ModelNotAvailable(
                    f"adapters.engine.quantize: {self.config.quantize} is the CPU fast path; on {device} "
                    "use quantize: none",
                    param="model",
                )
            device = torch.device("cpu")  # auto + the CPU fast path: the CPU
        self.device = device
        self._files: BaseModelFiles | None = None
        self._tokenizer: Any = None
        self._base: Any = None
        self._peft: Any = None
        self._decoder: LlamaDecoder | None = None  # the fast path (adapters.engine.quantize != none)
        self._scheduler: Scheduler | None = None
        self._supervisor: Supervisor | None = None
        self._token_chars = 1  # the longest token's length in characters: a cheap bound on a text's tokens
        self._vocab = 0  # the model's logits per token
        self._grammars: GrammarCompiler | None = None
        self._eos: frozenset[int] = frozenset()
        self._max_len = self.config.max_model_len
        self._adapters: dict[str, _Resident] = {}
        self._linears: dict[str, tuple[int, int]] = {}
        self._retiring: dict[str, asyncio.Future[Any]] = {}
        self._serial = 0
        self._start_lock = asyncio.Lock()
        self._adapter_lock = asyncio.Lock()

    # ---- identity ----------------------------------------------------------
    @property
    def model_id(self) -> str:
        if self._files is not None:
            return self._files.model_id
        return self.config.model_id or resolve_source(self.config.model)[1]

    @property
    def model_digest(self) -> str:
        if self._files is None:  # converts the model if needed (once per machine)
            self._files = prepare_base_model(self.config.model, self.models_dir, self.config.model_id)
        return self._files.digest

    @property
    def max_model_len(self) -> int:
        return self._max_len

    @property
    def ready(self) -> bool:
        """Loaded, and its worker alive and making progress (see :mod:`carafe.adapters.supervisor`)."""
        return self._scheduler is not None and self._scheduler.failure is None

    @property
    def files(self) -> BaseModelFiles | None:
        """Where the loaded base model lives (after :meth:`start`)."""
        return self._files

    # ---- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        async with self._start_lock:
            if self._scheduler is None:
                await asyncio.wrap_future(self._spawn())

    def _spawn(self) -> Future[None]:
        """Load the model on a new thread that then runs the scheduler: one thread for all of torch's
        work. OpenMP keeps a worker pool per calling thread; with more pooled threads than cores it
        stops spinning between parallel regions, and a decode step (~150 of them) slows by half."""
        loaded: Future[None] = Future()

        def engine_thread() -> None:
            try:
                scheduler = self._load()
            except BaseException as exc:
                loaded.set_exception(exc)
                return
            self._scheduler = scheduler
            self._supervisor = Supervisor(scheduler, self.config.stall_timeout_s)
            loaded.set_result(None)
            self._supervisor.start()
            scheduler.run()

        threading.Thread(target=engine_thread, name="carafe-engine", daemon=True).start()
        return loaded

    def _load(self) -> Scheduler:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        claim(compute_cores(self.config.threads), pin=self.config.pin_threads)
        files = prepare_base_model(self.config.model, self.models_dir, self.config.model_id)
        tokenizer = AutoTokenizer.from_pretrained(files.folder)
        model: Any
        if self.config.quantize != "none":
            # the fast path packs each weight as it is read: no fp32 copy of the model is ever whole
            model = self._decoder = LlamaDecoder(
                AutoConfig.from_pretrained(files.folder),
                TensorFiles(files.folder),
                self.config.quantize,
                self.config.kernels,
            )
            self._linears = model.linear_shapes()
        else:
            dtype = {
                "auto": torch.float32 if self.device.type == "cpu" else torch.bfloat16,
                "float32": torch.float32,
                "bfloat16": torch.bfloat16,
                "float16": torch.float16,
            }[self.config.dtype]
            model = AutoModelForCausalLM.from_pretrained(files.folder, dtype=dtype).to(self.device).eval()  # type: ignore[arg-type]  # torch/transformers typing
            # shapes of the plain model's Linear layers, for checking adapters (taken before PEFT wraps them)
            self._linears = {
                n: (m.in_features, m.out_features) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
            }
            self._base = model
        eos = {tokenizer.eos_token_id}
        try:
            gen_eos = GenerationConfig.from_pretrained(files.folder).eos_token_id
            eos |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        except OSError:
            pass
        self._eos = frozenset(e for e in eos if e is not None)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self._eos)
        limit = getattr(model.config, "max_position_embeddings", None) or self.config.max_model_len
        self._max_len = min(self.config.max_model_len, int(limit))
        self._files, self._tokenizer = files, tokenizer
        self._token_chars = max(len(t) for t in tokenizer.get_vocab())
        self._vocab = int(model.config.vocab_size)
        self._grammars = GrammarCompiler(tokenizer)
        # the native decoder: every row its own KV, one pass per step (else a padded batch cache)
        kind = RowScheduler if getattr(model, "row_kv", False) else Scheduler
        scheduler = kind(
            model,
            model.config,
            device=self.device,
            pad_id=pad,
            max_batch_size=self.config.max_batch_size,
            batch_wait_s=self.config.batch_wait_ms / 1000,
            prefill_chunk=self.config.prefill_chunk,
            prefix_cache_tokens=self.config.prefix_cache_tokens,
            max_waiting=self.config.max_waiting,
        )
        kernels = f" ({self._decoder.kernels} kernels)" if self._decoder is not None else ""
        log.info(
            "serving %s (%s) on %s, weights %s%s",
            files.model_id,
            files.digest,
            self.device,
            self.config.quantize,
            kernels,
        )
        return scheduler

    async def close(self) -> None:
        scheduler, self._scheduler = self._scheduler, None
        if self._supervisor is not None:
            self._supervisor.stop()
        if scheduler is not None:
            scheduler.stop(timeout=0)  # fails what is pending; the worker ends after its current pass
            await asyncio.to_thread(scheduler.join, 5.0)

    def stats(self) -> dict[str, int]:
        """Counters for metrics: queue_depth, active_rows, steps, prefills, tokens_generated..."""
        base = {
            "queue_depth": 0,
            "active_rows": 0,
            "steps": 0,
            "prefills": 0,
            "tokens_generated": 0,
            "requests_finished": 0,
            "requests_cancelled": 0,
        }
        if self._scheduler is not None:
            base.update(self._scheduler.stats())
        return {**base, "adapters": len(self._adapters)}

    async def refresh(self) -> list[AdapterInfo]:
        """In-process adapters cannot change behind Carafe's back: the same as :meth:`adapters`."""
        return self.adapters()

    # ---- text --------------------------------------------------------------
    def _require_ready(self) -> Scheduler:
        if self._scheduler is None:
            raise EngineUnavailable("the model is not loaded yet; retry shortly")
        if self._scheduler.failure is not None:
            raise EngineUnavailable(self._scheduler.failure)
        return self._scheduler

    def count_tokens(self, text: str) -> int:
        self._require_ready()
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def chat_prompt(self, messages: list[ChatMessage]) -> str:
        self._require_ready()
        return self._tokenizer.apply_chat_template(  # type: ignore[no-any-return]  # torch/transformers typing
            [{"role": m.role, "content": m.content} for m in messages], tokenize=False, add_generation_prompt=True
        )

    def chat(
        self,
        messages: list[ChatMessage],
        params: SamplingParams,
        *,
        adapter: str | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[GenerationChunk]:
        return self._generate(
            lambda: self._tokenizer.encode(self.chat_prompt(messages), add_special_tokens=False),
            (sum(len(m.content) for m in messages), "messages"),
            params,
            adapter,
        )

    def complete(
        self, prompt: str, params: SamplingParams, *, adapter: str | None = None, request_id: str | None = None
    ) -> AsyncIterator[GenerationChunk]:
        return self._generate(
            lambda: self._tokenizer.encode(prompt, add_special_tokens=True), (len(prompt), "prompt"), params, adapter
        )

    def _check_params(self, params: SamplingParams) -> None:
        if params.max_tokens < 1:
            raise InvalidInput("max_tokens must be at least 1", param="max_tokens")
        if params.temperature < 0 or not 0 < params.top_p <= 1 or not 0 <= params.min_p <= 1:
            raise InvalidInput("temperature must be >= 0, top_p in (0, 1] and min_p in [0, 1]", param="temperature")
        if params.repetition_penalty <= 0:
            raise InvalidInput("repetition_penalty must be > 0", param="repetition_penalty")
        vocab = len(self._tokenizer)
        if any(not 0 <= t < vocab for t in params.stop_token_ids):
            raise InvalidInput(f"stop_token_ids must be token ids below {vocab}", param="stop_token_ids")
        ends = set(params.stop_token_ids) | (set() if params.ignore_eos else set(self._eos))
        if params.min_tokens > 0 and len(ends) >= self._vocab:
            raise InvalidInput(
                f"stop_token_ids and the end-of-sequence tokens cover the whole vocabulary, so with min_tokens "
                f"{params.min_tokens} no token may be generated; list fewer stop_token_ids",
                param="stop_token_ids",
                code="no_allowed_token",
            )

    def _check_length(self, params: SamplingParams, prompt_len: int) -> None:
        if prompt_len + params.max_tokens > self._max_len:
            raise TooLarge(
                f"the prompt has {prompt_len} tokens and max_tokens is {params.max_tokens}: together "
                f"{prompt_len + params.max_tokens}, over the model's limit of {self._max_len} tokens; "
                "shorten the prompt or lower max_tokens",
                param="max_tokens",
                code="context_length_exceeded",
            )

    def _check_size(self, size: tuple[int, str]) -> None:
        """Refuse a text that cannot fit before tokenizing it: each token covers at most ``_token_chars``.
        ``size`` is the text's characters and the request field it came from."""
        chars, field = size
        if chars > self._max_len * self._token_chars:
            raise TooLarge(
                f"the prompt has {chars} characters, more than {self._max_len} tokens (the model's limit) can "
                "hold; shorten it",
                param=field,
                code="context_length_exceeded",
            )

    async def _generate(
        self, encode: Any, size: tuple[int, str], params: SamplingParams, adapter: str | None
    ) -> AsyncIterator[GenerationChunk]:
        scheduler = self._require_ready()
        internal = None
        if adapter is not None and adapter != self.model_id:
            resident = self._adapters.get(adapter)
            if resident is None:
                raise AdapterNotFound(f"adapter {adapter!r} is not loaded", param="model")
            internal = resident.internal
        self._check_params(params)
        self._check_size(size)
        prompt_ids = await asyncio.to_thread(encode)  # templating and tokenizing a long text: off the event loop
        self._check_length(params, len(prompt_ids))
        sampler = RowSampler(params, prompt_ids, self._eos, device=self.device)
        grammars = self._grammars
        assert grammars is not None
        if params.constraint is not None:
            sampler.logits_processor = await asyncio.to_thread(
                grammars.mask_for, params.constraint, self._tokenizer.eos_token_id
            )
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[GenerationChunk | BaseException] = asyncio.Queue()

        def emit(item: GenerationChunk | BaseException) -> None:
            if params.logprobs is not None and isinstance(item, GenerationChunk) and item.token_ids:
                steps = sampler.logprob_steps[item.completion_tokens - len(item.token_ids) : item.completion_tokens]
                item.logprobs = [
                    replace(grammars.logprob(t, lp), top=[grammars.logprob(a, alp) for a, alp in alts])
                    for t, lp, alts in steps
                    if not sampler.is_stop_token(t)
                ]
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody listens anymore
                request.cancelled = True

        request = Request(
            prompt_ids=prompt_ids,
            params=params,
            emit=emit,
            adapter=internal,
            max_len=self._max_len,
            sampler=sampler,
            stream=TextStream(self._tokenizer, params.stop),
        )
        scheduler.submit(request)
        try:
            while True:
                item = await chunks.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            request.cancelled = True  # the worker drops the row at its next step

    # ---- adapters ----------------------------------------------------------
    def adapters(self) -> list[AdapterInfo]:
        return [r.info for r in self._adapters.values()]

    def _check_fits(self, folder: Path) -> int:
        """PEFT checks (A/B ranks, finite weights) plus: every LoRA weight fits a base module."""
        return check_peft_dir(folder, max_rank=self.config.max_lora_rank, linears=self._linears, base=self.model_id)

    def _attach(self, internal: str, folder: Path, weights: LoraWeights | None) -> None:
        """Worker thread: add the adapter to the model (wrapping it on first use)."""
        assert self._scheduler is not None
        if self._decoder is not None and weights is not None:
            self._decoder.add_adapter(internal, weights)
            return
        from peft import PeftModel  # the fp32 path only: importing it costs ~140 MB the fast path never needs

        if self._peft is None:
            self._peft = PeftModel.from_pretrained(self._base, str(folder), adapter_name=internal, is_trainable=False)
        else:
            self._peft.load_adapter(str(folder), adapter_name=internal, is_trainable=False)
        self._peft.eval()
        if self.config.gathered_lora:
            gathered.install(self._peft)  # mixed-adapter batches: two bmm per layer, not a loop per adapter
        self._scheduler.model, self._scheduler.peft = self._peft, True

    def _detach(self, internal: str) -> None:
        """Worker thread: delete the adapter's weights (unwrapping after the last one)."""
        assert self._scheduler is not None
        self._scheduler.forget_prefixes(internal)
        if self._decoder is not None:
            self._decoder.remove_adapter(internal)
            return
        if list(self._peft.peft_config) == [internal]:
            self._base = self._peft.base_model.unload()
            self._peft = None
            self._scheduler.model, self._scheduler.peft = self._base, False
        else:
            self._peft.delete_adapter(internal)
            gathered.clear(self._peft)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    async def load_adapter(self, name: str, path: str) -> AdapterInfo:
        scheduler = self._require_ready()
        folder = Path(path).expanduser()
        async with self._adapter_lock:
            if name in self._retiring:  # an unload of the same name is draining: let it finish
                await asyncio.shield(self._retiring[name])
            current = self._adapters.get(name)
            if current is not None:
                if current.resolved == folder.resolve():
                    return current.info
                raise AdapterConflict(
                    f"adapter {name!r} is already loaded from {current.info.path}; unload it "
                    "first or pick another name",
                    param="lora_name",
                )
            if name == self.model_id:
                raise AdapterConflict(f"{name!r} is the base model's name", param="lora_name")
            if len(self._adapters) >= self.config.max_loras:
                raise AdapterConflict(
                    f"{len(self._adapters)} adapters are loaded, the limit "
                    f"(adapters.engine.max_loras); unload one first",
                    param="lora_name",
                )
            if not folder.is_dir():
                raise InvalidAdapter(f"{folder} is not a folder", param="path")
            rank = await asyncio.to_thread(self._check_fits, folder)
            weights = await asyncio.to_thread(read_lora, folder) if self._decoder is not None else None
            self._serial += 1
            internal = f"carafe_{self._serial}"
            try:
                await asyncio.wrap_future(scheduler.call(lambda: self._attach(internal, folder, weights)))
            except CarafeError:
                raise
            except Exception as exc:  # e.g. a RuntimeError from the native add_adapter: the adapter's fault
                raise InvalidAdapter(f"{folder} cannot be loaded: {type(exc).__name__}: {exc}", param="path") from exc
            info = AdapterInfo(name=name, path=str(path), rank=rank)
            self._adapters[name] = _Resident(info, internal, folder.resolve())
            log.info("loaded adapter %s from %s (rank %s)", name, path, rank)
            return info

    async def unload_adapter(self, name: str) -> None:
        """New requests for ``name`` fail at once; running ones finish, then its weights go."""
        scheduler = self._require_ready()
        resident = self._adapters.pop(name, None)
        if resident is None:
            raise AdapterNotFound(f"adapter {name!r} is not loaded", param="lora_name")
        done = asyncio.wrap_future(scheduler.retire(resident.internal, lambda: self._detach(resident.internal)))
        self._retiring[name] = done
        try:
            await asyncio.shield(done)
        finally:
            if self._retiring.get(name) is done:
                del self._retiring[name]
        log.info("unloaded adapter %s", name)
