"""Two gateways (real uvicorn, `carafe serve`) on one PostgreSQL and one Redis, as
behind a load balancer: a key made on A works on B at once; a revocation on A is
refused on B once the cache TTL has passed; a conversation stored on A continues
on B; a limit of N per minute holds across both; a paused Redis makes no request
hang; a replica killed with kill -9 while writing leaves the database consistent.
The model is the stand-in vLLM server (tests/servers.py): what is tested here is
the state the replicas share, not generation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import redis as redis_client
from sqlalchemy import select

from carafe.state import Database
from carafe.state.schema import AdminAction, ApiKey
from tests.servers import free_port, serve_in_thread, vllm_like_app
from tests.state.services import Postgres, Redis

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BOOT = "bootstrap-admin-key-for-the-replica-test"
MODEL = "SmolLM2-135M-Instruct"
TTL_S = 0.5


@dataclass
class Replica:
    name: str
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(Path(self.env["CARAFE_DATA_DIR"]) / "gateway.log", "ab")  # noqa: SIM115
        cmd = [sys.executable, "-m", "carafe.cli.main", "serve", "--log-level", "warning"]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (
                f"replica {self.name} exited: see {self.env['CARAFE_DATA_DIR']}/gateway.log"
            )
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"replica {self.name} did not become ready")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {BOOT}"}, timeout=30)

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def cluster(
    pg: Postgres, redis: Redis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Replica, Replica, str]]:
    vllm = serve_in_thread(vllm_like_app(), timeout=30)
    url = pg.fresh_database()
    replicas = []
    for name in ("a", "b"):
        data = tmp_path_factory.mktemp(f"replica-{name}")
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "CARAFE_DATA_DIR": str(data),
            "CARAFE_SERVER__PORT": str(free_port()),
            "CARAFE_ADAPTERS__ENGINE__BACKEND": "vllm",
            "CARAFE_ADAPTERS__ENGINE__VLLM_URL": vllm.url,
            "CARAFE_ADAPTERS__ENGINE__VLLM_MODEL_DIGEST": "sha256:abc",
            "CARAFE_GUARDS__ENABLED": "false",
            "CARAFE_TELEMETRY__EXPORTER": "none",
            "CARAFE_AUTH__ADMIN_BOOTSTRAP_KEY": BOOT,
            "CARAFE_STATE__DATABASE_URL": url,
            "CARAFE_STATE__REDIS_URL": redis.url,
            "CARAFE_STATE__REDIS_TIMEOUT_S": "0.3",
            "CARAFE_STATE__CACHE_TTL_S": str(TTL_S),
        }
        replicas.append(Replica(name, int(env["CARAFE_SERVER__PORT"]), env))
    for r in replicas:
        r.start()
    try:
        yield replicas[0], replicas[1], url
    finally:
        for r in replicas:
            r.stop()
        vllm.stop()


def _new_key(replica: Replica, user: str, **fields: object) -> dict[str, object]:
    with replica.admin() as admin:
        r = admin.post("/admin/keys", json={"user": user, **fields})
    assert r.status_code == 200, r.text
    return r.json()


def _chat(client: openai.OpenAI) -> str:
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    return reply.choices[0].message.content or ""


def test_a_key_made_on_a_works_on_b_and_a_revocation_on_a_is_refused_on_b(cluster) -> None:  # type: ignore[no-untyped-def]
    a, b, _ = cluster
    made = _new_key(a, "hana", groups=["hr"])
    assert _chat(b.client(str(made["key"])))  # at once: B had never read it
    with a.admin() as admin:
        assert admin.delete(f"/admin/keys/{made['key_id']}").status_code == 200
    time.sleep(TTL_S + 0.1)  # B may trust what it read for the cache TTL (0.5 s), no longer
    with pytest.raises(openai.AuthenticationError):
        _chat(b.client(str(made["key"])))


def test_a_conversation_stored_on_a_continues_on_b(cluster) -> None:  # type: ignore[no-untyped-def]
    a, b, _ = cluster
    key = str(_new_key(a, "ada")["key"])
    first = a.client(key).responses.create(model=MODEL, input="My name is Ada.", max_output_tokens=4)
    follow = b.client(key).responses.create(
        model=MODEL, input="What is my name?", previous_response_id=first.id, max_output_tokens=4
    )
    assert follow.previous_response_id == first.id and follow.status in ("completed", "incomplete")
    namesake = str(_new_key(b, "ada")["key"])  # same user name, another key: not its conversation
    with pytest.raises(openai.NotFoundError):
        b.client(namesake).responses.create(model=MODEL, input="And?", previous_response_id=first.id)


def test_a_limit_per_minute_holds_across_both_replicas(cluster) -> None:  # type: ignore[no-untyped-def]
    a, b, _ = cluster
    for _ in range(3):  # a run straddling a minute boundary counts two windows: run it again
        key = str(_new_key(a, "app", rpm=6)["key"])
        minute = int(time.time() // 60)
        codes = []
        for i in range(12):  # 2x the limit, alternating replicas as a load balancer would
            with httpx.Client(base_url=(a, b)[i % 2].url, timeout=30) as c:
                codes.append(c.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code)
        if int(time.time() // 60) == minute:
            break
    assert codes[:6] == [200] * 6 and codes[6:] == [429] * 6  # no false 429, no overshoot


def test_tokens_per_minute_count_the_work_across_replicas(cluster, redis: Redis) -> None:  # type: ignore[no-untyped-def]
    """A's request reserves prompt + max_tokens, then gives back what it did not generate;
    B sees what A really used: one token more than the rest is refused, the rest is not."""
    a, b, _ = cluster
    counters = redis_client.Redis.from_url(redis.url)
    for _ in range(3):  # a run straddling a minute boundary counts two windows: run it again
        made = _new_key(a, "app", tpm=300)
        key, minute = str(made["key"]), int(time.time() // 60)
        ask = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
        reply = a.client(key).chat.completions.create(**ask, max_tokens=200)
        assert reply.usage is not None
        used = int(counters.get(f"carafe:tpm:{made['key_id']}:{minute}") or 0)
        prompt = used - reply.usage.completion_tokens  # what A's reservation counted for the prompt
        assert prompt > 0 and used < prompt + 200  # A was charged what it generated, not its max_tokens
        room = 300 - used - prompt  # max_tokens B may still ask for in this minute
        try:
            b.client(key).chat.completions.create(**ask, max_tokens=room + 1)
            refused = None
        except openai.RateLimitError as exc:
            refused = exc
        admitted = b.client(key).chat.completions.create(**ask, max_tokens=room).choices  # no false 429
        if int(time.time() // 60) == minute:
            break
    assert refused is not None and "tokens per minute" in str(refused)
    assert admitted


def test_a_paused_redis_makes_no_request_hang(cluster, redis: Redis) -> None:  # type: ignore[no-untyped-def]
    a, b, _ = cluster
    key = str(_new_key(a, "app", rpm=1000)["key"])
    with redis.paused():
        for replica in (a, b, a, b):
            with httpx.Client(base_url=replica.url, timeout=10) as c:  # a hang would raise ReadTimeout
                r = c.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200  # fail_open (the default): counted in the replica meanwhile
        ready = httpx.get(f"{a.url}/readyz", timeout=10).json()
        assert "redis unreachable" in ready["state"]["limits"] and "fail_open" in ready["state"]["limits"]
    assert httpx.get(f"{a.url}/readyz", timeout=10).json()["state"]["limits"] == "redis"


def test_kill_9_mid_write_leaves_the_database_consistent(cluster) -> None:  # type: ignore[no-untyped-def]
    a, b, url = cluster
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        with a.admin() as admin:
            while not stop.is_set():
                try:
                    r = admin.post("/admin/keys", json={"user": "burst"})
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    acknowledged.append(str(r.json()["key_id"]))

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    while len(acknowledged) < 10:
        time.sleep(0.02)
    a.kill9()  # mid-write: four writers in flight
    stop.set()
    for t in threads:
        t.join(timeout=30)
    db = Database(url)
    with db.transaction() as s:
        burst = set(s.scalars(select(ApiKey.key_id).where(ApiKey.user_name == "burst")))
        recorded = set(s.scalars(select(AdminAction.target).where(AdminAction.action == "key.create")))
    assert set(acknowledged) <= burst  # every acknowledged write is there
    assert burst <= recorded  # and no key without its admin record (one transaction each)
    a.start()  # the killed replica restarts on the same database
    key = str(_new_key(b, "after")["key"])
    assert _chat(a.client(key))
