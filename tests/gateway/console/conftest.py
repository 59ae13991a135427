"""A real gateway for the console suite: `carafe serve` in its own process (real model,
real Qdrant Edge index over HR and public documents, real registry with two versions of
an adapter and two tuned versions of another with their evaluation, traces in a
JSON-lines file, the state database under its data dir), a real OpenID provider that
people sign in to (node's oidc-provider, ``idp.mjs``), and Debian's headless chromium
driven by Playwright (``executable_path``; no downloaded browser)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from carafe.state import Keys, StateConfig, open_state
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
IDP_ACCOUNTS = {  # who may sign in at the IdP: roles from the roles claim or from a group (auth.oidc.role_groups)
    "ada": {"groups": ["it"], "roles": ["admin"]},
    "olga": {"groups": ["audit-team"], "roles": []},
    "vic": {"groups": ["employees"], "roles": ["viewer"]},
    "nora": {"groups": ["hr"], "roles": []},
}
AUDIENCE = "urn:carafe:gateway"
CONFIG = """
data_dir: {data}
models_cache: {models}
server: {{host: 127.0.0.1, port: {port}}}
telemetry: {{exporter: file, schedule_delay_ms: 50}}
indexer: {{sources: [{{name: policies, path: {docs}}}]}}
routing: {{retrieval: {{enabled: true, top_k: 3}}}}
auth:
  oidc:
    issuer: {issuer}
    audience: {audience}
    role_groups: {{auditor: [audit-team]}}
    console_client_id: carafe-console
"""
TUNED = [  # benefits-qa versions as `carafe tune publish` writes them: lineage, evaluation with the four cells, gate
    {"cells": [0.2, 0.5, 0.6, 0.8], "loss": 1.21, "samples": 120, "passed": True},
    {"cells": [0.2, 0.6, 0.6, 0.9], "loss": 0.98, "samples": 180, "passed": True},
]


@dataclass
class Console:
    url: str
    keys: dict[str, str]
    data: Path
    issuer: str

    def state_keys(self) -> Keys:
        """The keys in the gateway's state database, as the CLI beside it sees them."""
        return open_state(StateConfig(), self.data).keys

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


@contextmanager
def idp(root: Path, redirect_uri: str) -> Iterator[str]:
    """The company IdP (idp.mjs on node's oidc-provider) with IDP_ACCOUNTS; yields its issuer."""
    script = Path(__file__).with_name("idp.mjs")
    if shutil.which("node") is None or not (script.parent / "node_modules" / "oidc-provider").is_dir():
        pytest.fail(
            "node and the npm oidc-provider are missing: npm ci --prefix tests/gateway/console (make test does)"
        )
    accounts = root / "accounts.json"
    accounts.write_text(json.dumps(IDP_ACCOUNTS))
    port = free_port()
    proc = subprocess.Popen(["node", str(script), str(port), redirect_uri, str(accounts)], cwd=script.parent)
    issuer = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise TimeoutError("the IdP did not start")
        yield issuer
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _publish_tuned(admin: httpx.Client, root: Path) -> None:
    """benefits-qa 1 and 2 with the manifests the tuning pipeline publishes (on the served base)."""
    base = admin.get("/admin/adapters/hr-style").json()["manifests"]["1"]["base_model"]
    for version, run in enumerate(TUNED, start=1):
        lora = make_lora(root / f"tuned-{version}", rank=4, seed=10 + version)
        cells = dict(zip(("base", "adapter", "base+rag", "adapter+rag"), run["cells"], strict=True))
        manifest = {
            "name": "benefits-qa",
            "base_model": base,
            "kind": "knowledge",
            "description": "Answers questions about the benefits handbook",
            "recipes": [{"path": "knowledge/acme/benefits/qna.yaml", "sha256": f"{version:064x}"}],
            "data": {"sha256": f"{version + 7:064x}", "size": run["samples"]},
            "teacher": "template",
            "hyperparameters": {"knowledge": {"epochs": version, "learning_rate": 0.0002}, "seed": 7},
            "metrics": {"cells": {**cells, "questions": 10}, "adapter": {"final_loss": run["loss"]},
                        "gate": {"passed": run["passed"], "failed": []}},
        }  # fmt: skip
        (lora / "manifest.json").write_text(json.dumps(manifest))
        r = admin.post("/admin/adapters", json={"path": str(lora), "name": "benefits-qa", "version": version})
        assert r.status_code == 201, r.text


@pytest.fixture(scope="package")
def console(tmp_path_factory) -> Iterator[Console]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver (make test does)")
    root = tmp_path_factory.mktemp("console")
    docs, data = root / "docs", root / "data"
    for rel in DOCS:
        (docs / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(POLICIES / rel, docs / rel)
    state = open_state(StateConfig(), data)  # the gateway's state database (SQLite under data_dir)
    issued = {u: state.keys.create(u, groups=g, roles=r, rpm=100_000)[0] for u, (g, r) in USERS.items()}
    state.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with idp(root, f"{url}/console/login/callback") as issuer:
        config = root / "carafe.yaml"
        text = CONFIG.format(data=data, models=MODELS_CACHE, port=port, docs=docs, issuer=issuer, audience=AUDIENCE)
        config.write_text(text)
        yield from _serve(Console(url, issued, data, issuer), root, config)


def _serve(gw: Console, root: Path, config: Path) -> Iterator[Console]:
    log = root / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([*_carafe(), "serve", "--config", str(config)], stdout=out, stderr=out, env=env)
    try:
        _wait_ready(gw.url, proc, log)
        with gw.admin() as admin:
            assert admin.post("/admin/index/sync").status_code == 200
            for version, seed in ((1, 1), (2, 2)):
                lora = make_lora(root / f"lora-{version}", rank=4, seed=seed)
                r = admin.post("/admin/adapters", json={"path": str(lora), "name": "hr-style", "version": version})
                assert r.status_code == 201, r.text
            _publish_tuned(admin, root)
        yield gw
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="package")
def browser():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
