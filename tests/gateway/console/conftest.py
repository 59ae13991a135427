"""A real gateway for the console suite: `carafe serve` in its own process (real model,
real Qdrant Edge index over HR and public documents, real registry with two versions of
an adapter, traces in a JSON-lines file), and Debian's headless chromium driven by
Playwright (``executable_path``; no downloaded browser)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from carafe.gateway.auth import KeyStore
from tests.conftest import MODELS_CACHE, REPO
from tests.indexer.conftest import POLICIES
from tests.lora import make_lora
from tests.servers import free_port

CHROMIUM = Path(os.environ.get("CARAFE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "tmp" / "artifacts" / "console"
DOCS = ["hr/_acl.yaml", "hr/salary-bands-2026.md", "public/_acl.yaml", "public/company-overview.md"]
USERS = {  # user: (groups, roles)
    "root": ([], ["admin"]),
    "audrey": ([], ["auditor"]),
    "victor": ([], ["viewer"]),
    "hana": (["hr"], []),
}
CONFIG = """
data_dir: {data}
models_cache: {models}
server: {{host: 127.0.0.1, port: {port}}}
telemetry: {{exporter: file, schedule_delay_ms: 50}}
indexer: {{sources: [{{name: policies, path: {docs}}}]}}
routing: {{retrieval: {{enabled: true, top_k: 3}}}}
"""


@dataclass
class Console:
    url: str
    keys: dict[str, str]
    data: Path

    def admin(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys['root']}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=300)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"carafe serve exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the gateway did not become ready: {log.read_text()[-3000:]}")


def _carafe() -> list[str]:
    script = Path(sys.executable).with_name("carafe")
    return [str(script)] if script.exists() else [sys.executable, "-m", "carafe.cli.main"]


@pytest.fixture(scope="module")
def console(tmp_path_factory) -> Iterator[Console]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver (make test does)")
    root = tmp_path_factory.mktemp("console")
    docs, data = root / "docs", root / "data"
    for rel in DOCS:
        (docs / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(POLICIES / rel, docs / rel)
    keys = KeyStore(data / "keys.json")
    issued = {u: keys.create(u, groups=g, roles=r, rpm=100_000)[0] for u, (g, r) in USERS.items()}
    port = free_port()
    config = root / "carafe.yaml"
    config.write_text(CONFIG.format(data=data, models=MODELS_CACHE, port=port, docs=docs))
    log = root / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([*_carafe(), "serve", "--config", str(config)], stdout=out, stderr=out, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, log)
        gw = Console(url, issued, data)
        with gw.admin() as admin:
            assert admin.post("/admin/index/sync").status_code == 200
            for version, seed in ((1, 1), (2, 2)):
                lora = make_lora(root / f"lora-{version}", rank=4, seed=seed)
                r = admin.post("/admin/adapters", json={"path": str(lora), "name": "hr-style", "version": version})
                assert r.status_code == 201, r.text
        yield gw
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
