"""Cost budgets through the real gateway (real model, uvicorn, the openai SDK): an
admin sets a key's cost budget over the admin API or the CLI, a short answer is
charged what it generated (not its max_tokens reservation) — also when a streaming
client leaves early — and the key past its budget gets a 429 naming the budget."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest
import yaml
from typer.testing import CliRunner

from carafe.cli.main import app as cli
from carafe.config import load_config
from carafe.gateway.app import create_app
from carafe.state import Budgets, Database, StateConfig, database_url
from tests.conftest import MODELS_CACHE
from tests.servers import RunningServer, serve_in_thread

MODEL = "SmolLM2-135M-Instruct"
PRICES = {"default": {"input_per_1k": 0.0, "output_per_1k": 1.0}}  # 0.001 per generated token
SHORT = {"stop": [" ", "\n", "."], "temperature": 0.0}  # the answer ends at its first word


@pytest.fixture(scope="module")
def priced(tmp_path_factory) -> Iterator[tuple[RunningServer, str]]:  # type: ignore[no-untyped-def]
    data = tmp_path_factory.mktemp("priced")
    cfg = load_config(None, data_dir=data, models_cache=MODELS_CACHE, state={"prices": PRICES})
    gateway = create_app(cfg)
    admin_key, _ = gateway.state.carafe.keys.create("root", admin=True, rpm=100_000)
    running = serve_in_thread(gateway)
    try:
        yield running, admin_key
    finally:
        running.stop()


def _key_with_budget(url: str, admin_key: str, max_cost: float) -> tuple[str, str]:
    auth = {"Authorization": f"Bearer {admin_key}"}
    made = httpx.post(f"{url}/admin/keys", json={"user": "app"}, headers=auth, timeout=30)
    assert made.status_code == 200, made.text
    key_id = made.json()["key_id"]
    body = {"scope": f"key:{key_id}", "window": "day", "max_cost": max_cost}
    put = httpx.put(f"{url}/admin/keys/budgets", json=body, headers=auth, timeout=30)
    assert put.status_code == 200, put.text
    listed = httpx.get(f"{url}/admin/keys/budgets", headers=auth, timeout=30).json()["data"]
    assert {"scope": f"key:{key_id}", "window": "day", "max_tokens": None, "max_cost": max_cost} in listed
    return made.json()["key"], key_id


@pytest.mark.slow
def test_short_answers_cost_what_they_generated_and_the_budget_429_names_itself(priced) -> None:  # type: ignore[no-untyped-def]
    server, admin_key = priced
    key, key_id = _key_with_budget(server.url, admin_key, max_cost=0.5)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    ask = [{"role": "user", "content": "Say hello."}]
    used = 0
    for _ in range(2):  # each reserves 0.4 of 0.5: the second passes only because the first was refunded
        r = client.chat.completions.create(model=MODEL, messages=ask, max_tokens=400, **SHORT)  # type: ignore[arg-type]
        assert r.usage is not None and 0 < r.usage.completion_tokens < 50
        used += r.usage.completion_tokens
    with pytest.raises(openai.RateLimitError, match=rf"cost per day for key:{key_id} \(budget\)") as refused:
        client.chat.completions.create(model=MODEL, messages=ask, max_tokens=499, **SHORT)  # type: ignore[arg-type]
    assert refused.value.status_code == 429
    state = server.app.state.carafe
    state.store.ledger.flush()
    assert Budgets(state.store.db).usage(f"key:{key_id}", "day").cost_micros == used * 1000


@pytest.mark.slow
def test_legacy_completions_with_several_choices_are_refunded_too(priced) -> None:  # type: ignore[no-untyped-def]
    server, admin_key = priced
    key, key_id = _key_with_budget(server.url, admin_key, max_cost=0.5)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    used = 0
    for _ in range(2):  # 2 choices x 200 = 0.4 reserved each time, of 0.5
        r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=200, n=2, **SHORT)  # type: ignore[arg-type]
        assert r.usage is not None
        used += r.usage.completion_tokens
    state = server.app.state.carafe
    state.store.ledger.flush()
    assert Budgets(state.store.db).usage(f"key:{key_id}", "day").cost_micros == used * 1000


@pytest.mark.slow
def test_a_client_that_leaves_a_stream_is_charged_only_what_was_generated(priced) -> None:  # type: ignore[no-untyped-def]
    server, admin_key = priced
    key, key_id = _key_with_budget(server.url, admin_key, max_cost=0.5)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    ask = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
    stream = client.chat.completions.create(model=MODEL, messages=ask, max_tokens=450, stream=True)
    for i, _chunk in enumerate(stream):
        if i == 3:
            break
    stream.close()  # the client leaves after a few tokens, 0.45 reserved
    state = server.app.state.carafe
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the gateway notices the disconnect and settles
        state.store.ledger.flush()
        spent = Budgets(state.store.db).usage(f"key:{key_id}", "day").cost_micros
        if spent < 450_000:
            break
        time.sleep(0.2)
    assert 0 < spent < 450_000  # what was generated until the gateway saw the client go
    room = (500_000 - spent) // 1000 - 1  # tokens left in the budget, more than the 50 left without a refund
    assert room > 50
    r = client.chat.completions.create(model=MODEL, messages=ask, max_tokens=room, **SHORT)  # type: ignore[arg-type]
    assert r.usage is not None and r.usage.completion_tokens > 0  # admitted thanks to the refund


def test_the_cli_sets_a_cost_budget_beside_a_token_budget(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "carafe.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "state": {"prices": PRICES}}))
    runner = CliRunner()
    tokens = runner.invoke(cli, ["keys", "budget", "team:support", "--max-tokens", "2000", "--config", str(config)])
    assert tokens.exit_code == 0, tokens.output
    cost = runner.invoke(
        cli, ["keys", "budget", "team:support", "--max-cost", "12.5", "--window", "day", "--config", str(config)]
    )
    assert cost.exit_code == 0, cost.output
    assert "2000 tokens and 12.5 cost per day" in cost.output  # the token part is kept
    db = Database.open(database_url(StateConfig(), tmp_path / "data"))
    [rule] = Budgets(db).rules()
    assert (rule.scope, rule.max_tokens, rule.max_cost) == ("team:support", 2000, 12.5)
    refused = runner.invoke(cli, ["keys", "budget", "team:support", "--config", str(config)])
    assert refused.exit_code != 0 and "max_tokens or max_cost" in refused.output
