"""A real uvicorn server in a background thread, for end-to-end tests, and a
stand-in vLLM server to run in it."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    app: Any
    port: int
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def serve_in_thread(app: Any, *, port: int | None = None, timeout: float = 300.0) -> RunningServer:
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test server failed to start (see the log above)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError("the test server did not start in time")
        time.sleep(0.05)
    return RunningServer(app, port, server, thread)


# A stand-in vLLM OpenAI server --------------------------------------------------
STANDIN_BASE = "SmolLM2-135M-Instruct"


def vllm_like_app(*, max_lora_rank: int = 64) -> Any:
    """A small app answering like vLLM 0.32's OpenAI server with runtime LoRA
    updating on, for fast tests. Checked against the real server (tests/vllm):

    - error bodies are ``{"error": {"message", "type", "param", "code"}}``;
    - a load validates the adapter at once: a folder without an adapter is a 404
      (the path is redacted in the message), a rank above ``--max-lora-rank`` or
      broken weights a 500 ("Call to add_lora method failed: ...");
    - re-loading a loaded name is a 400 unless ``load_inplace``; a base model's
      name is a 400; unloading an unknown name a 404;
    - an unload does not stop generations already running on that adapter;
    - ``legacy_lazy_load`` (off) imitates older vLLMs that answered 200 for any
      path and failed on the first request.
    """
    app = FastAPI()
    st = app.state
    st.loras, st.calls, st.bodies = {}, Counter(), []
    st.fail_generation, st.token_delay, st.legacy_lazy_load = False, 0.0, False

    def error(status: int, message: str, kind: str, param: str | None = None) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}}, status)

    def load_error(name: str, path: str) -> tuple[int, str, str] | None:
        config = Path(path) / "adapter_config.json"
        if not config.is_file():
            return 404, f"Loading lora {name} failed: No adapter found for <path>", "NotFoundError"
        rank = int(json.loads(config.read_text()).get("r", 0))
        if rank > max_lora_rank:
            message = (
                f"Call to add_lora method failed: Worker failed with error 'LoRA rank {rank} is greater "
                f"than max_lora_rank {max_lora_rank}.', please check the stack trace above for the root cause"
            )
            return 500, message, "InternalServerError"
        return None

    @app.get("/v1/models")
    async def models() -> dict:
        cards = [{"id": STANDIN_BASE, "object": "model", "root": "/models/smol", "parent": None, "max_model_len": 2048}]
        cards += [
            {"id": n, "object": "model", "root": p, "parent": STANDIN_BASE, "max_model_len": None}
            for n, p in st.loras.items()
        ]
        return {"object": "list", "data": cards}

    @app.post("/v1/load_lora_adapter")
    async def load(request: Request) -> Any:
        body = await request.json()
        st.calls["load"] += 1
        await asyncio.sleep(0.05)  # leave room for races
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return error(400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput")
        if name == STANDIN_BASE:
            return error(400, f"The lora adapter '{name}' conflicts with a served base model.", "InvalidUserInput")
        if name in st.loras and not body.get("load_inplace"):
            return error(
                400,
                f"The lora adapter '{name}' has already been loaded. If you want to load the adapter "
                "in place, set 'load_inplace' to True.",
                "InvalidUserInput",
            )
        if not st.legacy_lazy_load and (failed := load_error(name, path)) is not None:
            return error(*failed)
        st.loras[name] = path
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    @app.post("/v1/unload_lora_adapter")
    async def unload(request: Request) -> Any:
        name = (await request.json()).get("lora_name")
        if name not in st.loras:
            return error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
        del st.loras[name]
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    async def generate(request: Request, chat: bool) -> Any:
        body = await request.json()
        st.bodies.append(body)
        st.calls["generate"] += 1
        model = body["model"]
        if st.fail_generation:
            return error(500, "engine dead", "InternalServerError")
        if model != STANDIN_BASE and model not in st.loras:
            return error(
                404, f"The model `{model}` does not exist. Valid aliases: {STANDIN_BASE}.", "NotFoundError", "model"
            )
        if model != STANDIN_BASE and (failed := load_error(model, st.loras[model])) is not None:
            return error(400, failed[1], "BadRequestError")  # legacy_lazy_load: the first request fails
        words = ["Hello", " from", f" {model}"]
        if body.get("ignore_eos"):  # a long answer, for tests that need a request in flight
            words += [" ."] * body["max_tokens"]
        words = words[: body["max_tokens"]]
        finish = "length" if len(words) == body["max_tokens"] else "stop"

        def event(text: str, fin: str | None) -> str:
            choice = {"index": 0, "finish_reason": fin, **({"delta": {"content": text}} if chat else {"text": text})}
            return "data: " + json.dumps({"choices": [choice]}) + "\n\n"

        async def stream() -> Any:
            if chat:
                yield (
                    "data: "
                    + json.dumps(
                        {
                            "choices": [
                                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                            ]
                        }
                    )
                    + "\n\n"
                )
            for i, w in enumerate(words):
                await asyncio.sleep(st.token_delay)
                yield event(w, finish if i == len(words) - 1 else None)
            yield (
                "data: "
                + json.dumps(
                    {
                        "choices": [],
                        "usage": {"prompt_tokens": 5, "completion_tokens": len(words), "total_tokens": 5 + len(words)},
                    }
                )
                + "\n\n"
            )
            yield "data: [DONE]\n\n"

        if not body.get("stream"):
            return {"choices": [{"index": 0, "text": "".join(words), "finish_reason": finish}]}
        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        return await generate(request, True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await generate(request, False)

    return app
