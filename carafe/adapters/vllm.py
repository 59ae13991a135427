"""An :class:`~carafe.adapters.engine.Engine` backed by a vLLM OpenAI server.

One pooled ``httpx.AsyncClient`` per engine; connect errors (and only those) are
retried by the transport, every other failure surfaces at once. A server that
cannot be reached is :class:`EngineUnavailable` (HTTP 503 at the gateway).

vLLM's runtime LoRA endpoints have sharp edges this class files off (checked
against vLLM 0.32, tests/vllm):

- A load vLLM refuses is :class:`InvalidAdapter` (400 at the gateway), whatever
  vLLM's status: 404 for a folder without an adapter (vLLM hides the path in its
  message, so this names it), 500 "Call to add_lora method failed" for a rank
  above ``--max-lora-rank`` or broken weights.
- Older vLLMs answered 200 for a path that does not exist and failed on the first
  request: after a load the name must be listed by ``/v1/models`` and
  (``vllm_verify_load``) answer a one-token probe, else it is unloaded again.
- Loading a name that is already loaded is a 400: the same name and path is
  idempotent here, another path is a Conflict (``replace=True`` unloads first,
  so vLLM gives the new weights a new LoRA id and reuses no cached prefix).
- Concurrent loads/unloads of one name are serialized by a per-name lock; a 400
  "already been loaded" from another replica's load is checked by path.
- An unload does not stop generations already running on that adapter in vLLM;
  the adapter manager still waits for them, so the resident set stays true.

Adapter paths are passed as they are: the registry must be visible to vLLM under
the same path (a shared volume).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from carafe.adapters.config import EngineConfig
from carafe.adapters.engine import (
    AdapterInfo,
    ChatMessage,
    GenerationChunk,
    OutputConstraint,
    SamplingParams,
    TokenLogprob,
)
from carafe.adapters.errors import AdapterConflict, AdapterNotFound, EngineUnavailable, InvalidAdapter
from carafe.errors import CarafeError, Conflict, InvalidInput, TooLarge

log = logging.getLogger("carafe.adapters.vllm")


def sampling_body(params: SamplingParams) -> dict[str, Any]:
    """OpenAI fields plus the vLLM extras that differ from their defaults."""
    body: dict[str, Any] = {"max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p}
    if params.seed is not None:
        body["seed"] = params.seed
    if params.stop:
        body["stop"] = list(params.stop)
    extras = {
        "top_k": (params.top_k, -1),
        "min_p": (params.min_p, 0.0),
        "repetition_penalty": (params.repetition_penalty, 1.0),
        "presence_penalty": (params.presence_penalty, 0.0),
        "frequency_penalty": (params.frequency_penalty, 0.0),
        "min_tokens": (params.min_tokens, 0),
        "ignore_eos": (params.ignore_eos, False),
    }
    body.update({k: v for k, (v, default) in extras.items() if v != default})
    if params.stop_token_ids:
        body["stop_token_ids"] = list(params.stop_token_ids)
    if params.constraint is not None:
        body["structured_outputs"] = _structured(params.constraint)
    return body


def _structured(c: OutputConstraint) -> dict[str, Any]:
    """vLLM's own structured outputs (``structured_outputs`` extra) for a constraint."""
    if c.kind == "json_object":
        return {"json_object": True}
    key = {"json_schema": "json", "regex": "regex", "grammar": "grammar"}[c.kind]
    return {key: c.spec}


def _logprobs(choice: dict[str, Any], chat: bool) -> list[TokenLogprob] | None:
    """vLLM's streamed logprobs (chat or completions shape) as engine logprobs."""
    lp = choice.get("logprobs")
    if not lp:
        return None
    if chat:
        return [
            TokenLogprob(
                t["token"],
                t["logprob"],
                t.get("bytes") or list(t["token"].encode()),
                [
                    TokenLogprob(a["token"], a["logprob"], a.get("bytes") or list(a["token"].encode()))
                    for a in t.get("top_logprobs") or []
                ],
            )
            for t in lp.get("content") or []
        ]
    tops = lp.get("top_logprobs") or [None] * len(lp.get("tokens", []))
    return [
        TokenLogprob(
            tok, val, list(tok.encode()), [TokenLogprob(a, v, list(a.encode())) for a, v in (top or {}).items()]
        )
        for tok, val, top in zip(lp.get("tokens", []), lp.get("token_logprobs", []), tops)
    ]


def _message(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:500] or resp.reason_phrase
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return resp.text[:500]


class VLLMEngine:
    """Serves the base model and LoRA adapters through a vLLM OpenAI server."""

    def __init__(self, config: EngineConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.url = config.vllm_url.rstrip("/")
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._model_id = config.model_id or config.model
        self._digest = config.vllm_model_digest or ""
        self._max_model_len = config.max_model_len
        self._adapters: dict[str, AdapterInfo] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._ready = False

    # Engine properties -------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def model_digest(self) -> str:
        return self._digest

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    @property
    def ready(self) -> bool:
        return self._ready

    # HTTP --------------------------------------------------------------------
    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            cfg = self.config
            limits = httpx.Limits(
                max_connections=cfg.vllm_max_connections, max_keepalive_connections=cfg.vllm_max_connections
            )
            # The transport's `retries` applies to ConnectError/ConnectTimeout only: a request
            # that reached vLLM is never sent twice.
            transport = self._transport or httpx.AsyncHTTPTransport(retries=cfg.vllm_connect_retries, limits=limits)
            headers = {"Authorization": f"Bearer {cfg.vllm_api_key}"} if cfg.vllm_api_key else {}
            self._client = httpx.AsyncClient(
                base_url=self.url,
                transport=transport,
                headers=headers,
                timeout=httpx.Timeout(cfg.vllm_timeout_s, connect=cfg.vllm_connect_timeout_s),
            )
        return self._client

    def _unavailable(self, exc: Exception) -> EngineUnavailable:
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            return EngineUnavailable(
                f"vLLM at {self.url} did not answer within {self.config.vllm_timeout_s:g}s", code="engine_timeout"
            )
        self._ready = False  # /readyz says so until vLLM answers again (the reconcile loop asks)
        return EngineUnavailable(
            f"vLLM at {self.url} cannot be reached ({type(exc).__name__}); is it running? (adapters.engine.vllm_url)",
            code="engine_unavailable",
        )

    def _error(self, resp: httpx.Response, what: str) -> CarafeError:
        msg = f"vLLM {what}: {_message(resp)}"
        status = resp.status_code
        if status == 404:
            return AdapterNotFound(msg, param="model", code="model_not_found")
        if status == 409:
            return AdapterConflict(msg)
        if status == 413:
            return TooLarge(msg)
        if status in (400, 422):
            return InvalidInput(msg)
        return EngineUnavailable(msg, code="engine_error")

    async def _post(self, path: str, body: dict[str, Any], what: str) -> httpx.Response:
        try:
            resp = await self._http().post(path, json=body)
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from exc
        if resp.status_code >= 400:
            raise self._error(resp, what)
        return resp

    async def _models(self) -> list[dict[str, Any]]:
        try:
            resp = await self._http().get("/v1/models")
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from exc
        if resp.status_code >= 400:
            raise self._error(resp, "listing models")
        return list(resp.json().get("data", []))

    # lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Learn the served model and resident adapters; not ready (no raise) when vLLM is down."""
        try:
            await self.refresh()
        except EngineUnavailable as exc:
            log.warning("%s", exc.message)
            self._ready = False

    async def refresh(self) -> list[AdapterInfo]:
        """Re-read ``/v1/models``: the base card and the adapters resident in vLLM."""
        cards = await self._models()
        bases = [c for c in cards if not c.get("parent")]
        base = next((c for c in bases if c.get("id") == self.config.model_id), bases[0] if bases else None)
        if base is not None:
            self._model_id = self.config.model_id or base["id"]
            self._max_model_len = int(base.get("max_model_len") or self._max_model_len)
            self._digest = self.config.vllm_model_digest or base.get("digest") or self._digest
        self._adapters = {
            c["id"]: AdapterInfo(c["id"], str(c.get("root") or ""), c.get("rank")) for c in cards if c.get("parent")
        }
        self._ready = True  # vLLM answered: also recovers an engine that started while vLLM was down
        return list(self._adapters.values())

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._ready = False

    # prompts -----------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        """An estimate (about 3 bytes a token): vLLM tokenizes on its side."""
        return max(1, -(-len(text.encode()) // 3)) if text else 0

    def chat_prompt(self, messages: list[ChatMessage]) -> str:
        """A plain rendering (vLLM applies the real chat template server-side)."""
        return "".join(f"{m.role}: {m.content}\n" for m in messages) + "assistant: "

    # generation --------------------------------------------------------------
    def chat(
        self,
        messages: list[ChatMessage],
        params: SamplingParams,
        *,
        adapter: str | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[GenerationChunk]:
        body = {"messages": [{"role": m.role, "content": m.content} for m in messages], **sampling_body(params)}
        if params.logprobs is not None:
            body.update(logprobs=True, top_logprobs=params.logprobs)
        return self._stream("/v1/chat/completions", body, adapter, request_id, chat=True)

    def complete(
        self, prompt: str, params: SamplingParams, *, adapter: str | None = None, request_id: str | None = None
    ) -> AsyncIterator[GenerationChunk]:
        body = {"prompt": prompt, **sampling_body(params)}
        if params.logprobs is not None:
            body["logprobs"] = params.logprobs
        return self._stream("/v1/completions", body, adapter, request_id, chat=False)

    async def _stream(
        self, path: str, body: dict[str, Any], adapter: str | None, request_id: str | None, *, chat: bool
    ) -> AsyncIterator[GenerationChunk]:
        body = {**body, "model": adapter or self._model_id, "stream": True, "stream_options": {"include_usage": True}}
        headers = {"X-Request-Id": request_id} if request_id else {}
        finish: Any = None  # a FinishReason string from vLLM
        usage: dict[str, int] = {}
        try:
            async with self._http().stream("POST", path, json=body, headers=headers) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise self._error(resp, f"generation with {body['model']!r}")
                self._ready = True
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    event = json.loads(data)
                    if "error" in event:
                        raise EngineUnavailable(f"vLLM failed mid-stream: {event['error'].get('message', event)}")
                    usage = event.get("usage") or usage
                    for choice in event.get("choices", [])[:1]:
                        text = (choice.get("delta", {}).get("content") if chat else choice.get("text")) or ""
                        finish = choice.get("finish_reason") or finish
                        lps = _logprobs(choice, chat)
                        if text or lps:
                            yield GenerationChunk(text=text, logprobs=lps)
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from exc
        yield GenerationChunk(
            text="",
            finish_reason=finish if finish in ("stop", "length") else "stop",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
        )

    # adapters ----------------------------------------------------------------
    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def load_adapter(self, name: str, path: str, *, replace: bool = False) -> AdapterInfo:
        """Load ``path`` under ``name`` and check vLLM can really serve it."""
        async with self._lock(name):
            await self.refresh()
            current = self._adapters.get(name)
            if current is not None:
                if current.path == path:
                    return current
                if not replace:
                    raise AdapterConflict(
                        f"vLLM already serves {name!r} from {current.path}; unload it first", param="lora_name"
                    )
                await self._unload(name)
            try:
                await self._post(
                    "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path}, f"loading adapter {name!r}"
                )
            except InvalidInput as exc:
                if "already been loaded" not in exc.message:
                    raise self._refused(name, path, exc) from exc
                # another gateway replica won the race: fine if it loaded the same path
            except AdapterNotFound as exc:
                raise self._refused(name, path, exc) from exc
            except EngineUnavailable as exc:
                if exc.code != "engine_error" or "add_lora" not in exc.message:
                    raise
                raise self._refused(name, path, exc) from exc  # vLLM read the files and rejected them
            await self.refresh()
            info = self._adapters.get(name)
            if info is None:
                raise InvalidAdapter(
                    f"vLLM answered the load of {name!r} with success but does not list it; "
                    f"is {path} present on the vLLM host?",
                    param="lora_path",
                )
            if info.path and info.path != path:
                raise AdapterConflict(f"vLLM serves {name!r} from {info.path}, not {path}", param="lora_name")
            if self.config.vllm_verify_load:
                await self._probe(name, path)
            rank = _rank(path)
            info = AdapterInfo(name, path, rank)
            self._adapters[name] = info
            return info

    @staticmethod
    def _refused(name: str, path: str, exc: CarafeError) -> InvalidAdapter:
        return InvalidAdapter(
            f"vLLM cannot load {path} as {name!r} ({exc.message}); the folder must hold a PEFT "
            "adapter, be visible to vLLM at the same path, and fit its --max-lora-rank",
            param="lora_path",
        )

    async def _probe(self, name: str, path: str) -> None:
        """A one-token completion: vLLM reads the files only when a request needs them."""
        try:
            await self._post(
                "/v1/completions",
                {"model": name, "prompt": "ok", "max_tokens": 1, "temperature": 0},
                f"probing adapter {name!r}",
            )
        except EngineUnavailable as exc:
            if exc.code == "engine_unavailable":
                raise
            await self._safe_unload(name)
            raise InvalidAdapter(
                f"vLLM accepted {path} as {name!r} but cannot serve it ({exc.message}); "
                "check the folder exists on the vLLM host and is a valid adapter",
                param="lora_path",
            ) from exc
        except (InvalidInput, AdapterNotFound, Conflict) as exc:
            await self._safe_unload(name)
            raise InvalidAdapter(
                f"vLLM accepted {path} as {name!r} but cannot serve it ({exc.message})", param="lora_path"
            ) from exc

    async def _safe_unload(self, name: str) -> None:
        try:
            await self._unload(name)
        except CarafeError as exc:
            log.warning("could not unload broken adapter %s: %s", name, exc.message)

    async def _unload(self, name: str) -> None:
        await self._post("/v1/unload_lora_adapter", {"lora_name": name}, f"unloading adapter {name!r}")
        self._adapters.pop(name, None)

    async def unload_adapter(self, name: str) -> None:
        async with self._lock(name):
            await self._unload(name)

    def adapters(self) -> list[AdapterInfo]:
        """Adapters resident in vLLM as last seen (refreshed on every load and by :meth:`refresh`)."""
        return list(self._adapters.values())

    def stats(self) -> dict[str, int]:
        """vLLM keeps its own queue (its ``/metrics``); Carafe counts only the adapters."""
        return {"adapters": len(self._adapters)}


def _rank(path: str) -> int | None:
    try:
        return int(json.loads((Path(path) / "adapter_config.json").read_text()).get("r"))
    except (OSError, ValueError, TypeError):
        return None
