"""Client libraries that applications use, against the real gateway and model:
LangChain (``langchain-openai``), LiteLLM as a client, LlamaIndex's OpenAI-like LLM."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from tests.gateway.conftest import BASE_MODEL, Gateway
from tests.gateway.test_structured_tools_e2e import WEATHER

langchain_openai = pytest.importorskip("langchain_openai")


class Pet(BaseModel):
    name: str = Field(max_length=20)
    species: str = Field(max_length=20)
    age: int


def chat_model(gateway: Gateway, **kw):
    return langchain_openai.ChatOpenAI(
        model=BASE_MODEL, base_url=f"{gateway.url}/v1", api_key=gateway.user_key, temperature=0, max_retries=0, **kw
    )


def test_langchain_invoke_and_stream_with_usage(gateway: Gateway) -> None:
    llm = chat_model(gateway, max_tokens=12)
    msg = llm.invoke("Name three colours.")
    assert msg.content and msg.usage_metadata["output_tokens"] > 0
    chunks = list(chat_model(gateway, max_tokens=12, stream_usage=True).stream("Name three colours."))
    total = chunks[0]
    for c in chunks[1:]:
        total += c
    assert total.content and total.usage_metadata["output_tokens"] > 0


def test_langchain_with_structured_output_json_schema(gateway: Gateway) -> None:
    structured = chat_model(gateway, max_tokens=80).with_structured_output(Pet, method="json_schema")
    pet = structured.invoke("Invent a pet.")
    assert isinstance(pet, Pet)


def test_langchain_bind_tools(gateway: Gateway) -> None:
    llm = chat_model(gateway, max_tokens=60).bind_tools([WEATHER], tool_choice="get_weather")
    msg = llm.invoke("What is the weather in Oslo?")
    (call,) = msg.tool_calls
    assert call["name"] == "get_weather" and set(call["args"]) == {"city", "unit"}


def test_litellm_as_a_client(gateway: Gateway) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of the price list at import
    litellm = pytest.importorskip("litellm")
    kw = dict(
        model=f"openai/{BASE_MODEL}",
        api_base=f"{gateway.url}/v1",
        api_key=gateway.user_key,
        max_tokens=60,
        temperature=0,
    )
    r = litellm.completion(messages=[{"role": "user", "content": "Name three colours."}], **kw)
    assert r.choices[0].message.content
    r = litellm.completion(
        messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
        tools=[WEATHER],
        tool_choice="required",
        **kw,
    )
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["unit"] in ("c", "f")


LLAMA_PYTHON = Path(
    os.environ.get(
        "CARAFE_LLAMAINDEX_PYTHON", Path(__file__).resolve().parents[2] / ".carafe/venv-llamaindex/bin/python"
    )
)
LLAMA_SCRIPT = """
import json, sys
from llama_index.llms.openai_like import OpenAILike
from llama_index.core.llms import ChatMessage
url, key, model = sys.argv[1:4]
llm = OpenAILike(model=model, api_base=url, api_key=key, is_chat_model=True, max_tokens=12, temperature=0,
                 context_window=2048, max_retries=0)
chat = llm.chat([ChatMessage(role="user", content="Name three colours.")]).message.content
streamed = "".join(r.delta or "" for r in llm.stream_complete("The capital of France is"))
print(json.dumps({"chat": chat, "streamed": streamed}))
"""


@pytest.mark.skipif(
    not LLAMA_PYTHON.exists(), reason="LlamaIndex needs openai<3: its own venv (CARAFE_LLAMAINDEX_PYTHON)"
)
def test_llama_index_openai_like(gateway: Gateway) -> None:
    # llama-index-llms-openai pins openai<3, so it runs in its own environment as a real separate client
    out = subprocess.run(
        [str(LLAMA_PYTHON), "-c", LLAMA_SCRIPT, f"{gateway.url}/v1", gateway.user_key, BASE_MODEL],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["chat"] and result["streamed"]
