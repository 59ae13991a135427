"""The lab bench/crash.py kills things in: a real gateway (`carafe serve`) on a small
config in a temp folder, and the `carafe` CLI, driven only through their public
faces (the CLI and HTTP), so it keeps working whatever stores keys or channels.

What is here: the config and the documents with their ACLs, a real PEFT adapter
(built from the base model's shapes, no training), the gateway process (start,
kill -9, wait for ready), CLI runs that the crasher may kill mid-way, and the
ledger of acknowledged writes the crasher checks after every restart.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent  # the CLI and gateway run this checkout's code
BASE_ID = "SmolLM2-135M-Instruct"
GROUPS = ("team-a", "team-b")
WIDE, NARROW = list(GROUPS), ["team-a"]  # team-b's user (bob) loses access when a document narrows
DOCS = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_doc(folder: Path, n: int, groups: list[str]) -> None:
    """Document ``n`` with its ACL in front matter, replaced atomically (the source's ACL at that moment)."""
    text = (
        f"---\nacl:\n  groups: [{', '.join(groups)}]\nsensitivity: internal\n---\n"
        f"# Codeword {n}\n\nThe secret codeword of project {n} is zephyr{n}quartz. "
        f"Only the groups named above may read that project {n} uses zephyr{n}quartz.\n"
    )
    tmp = folder / f".doc{n}.md.tmp"
    tmp.write_text(text)
    os.replace(tmp, folder / f"doc{n}.md")


def write_adapter(folder: Path, models_dir: Path, seed: int) -> Path:
    """A real PEFT LoRA folder (rank 4 on q_proj and v_proj) sized from the base model's weights."""
    from safetensors.numpy import save_file

    from carafe.adapters.peft_check import linear_shapes

    shapes = linear_shapes(next(p.parent for p in models_dir.rglob("model.safetensors")))
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for module, (n_in, n_out) in shapes.items():
        if module.endswith(("q_proj", "v_proj")):
            key = f"base_model.model.{module}"
            tensors[f"{key}.lora_A.weight"] = rng.normal(0, 0.02, (4, n_in)).astype(np.float32)
            tensors[f"{key}.lora_B.weight"] = rng.normal(0, 0.02, (n_out, 4)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8, "lora_dropout": 0.0}
    config |= {"target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": BASE_ID, "bias": "none"}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


@dataclass
class Ledger:
    """Acknowledged writes and what the checks found."""

    figures: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    promotes: list[list[Any]] = field(default_factory=list)  # [version, acknowledged (None: in flight)], in order
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)  # key_id -> {key, revoked (acknowledged)}
    acl: dict[int, list[str]] = field(default_factory=dict)  # document -> groups in its source now
    synced: dict[int, bool] = field(default_factory=dict)  # document -> an acknowledged sync ran since its change
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.figures[name] = self.figures.get(name, 0) + n

    def problem(self, kind: str, what: str) -> None:
        with self.lock:
            self.figures[kind] = self.figures.get(kind, 0) + 1
            self.problems.append(f"{kind}: {what}")
        print(f"  !! {kind}: {what}", flush=True)


class Lab:
    """The gateway, the CLI and the files of one crash run."""

    def __init__(self, workdir: Path, models_dir: Path) -> None:
        self.dir = workdir
        self.models_dir = models_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.docs = workdir / "docs"
        self.config = workdir / "carafe.yaml"
        self.gateway: subprocess.Popen[bytes] | None = None
        self.cli_running: dict[int, subprocess.Popen[str]] = {}
        self._cli_lock = threading.Lock()
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        self.env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self.keys: dict[str, str] = {}
        self.ready = False

    # setup -----------------------------------------------------------------
    def write_config(self) -> None:
        self.docs.mkdir(parents=True, exist_ok=True)
        for n in range(DOCS):
            write_doc(self.docs, n, WIDE)
        self.config.write_text(
            f"data_dir: {self.dir / 'data'}\nmodels_cache: {self.models_dir}\n"
            f"server: {{host: 127.0.0.1, port: {self.port}}}\n"
            "guards: {enabled: false}\n"
            f"indexer:\n  sources:\n    - {{name: crash, path: {self.docs}}}\n"
            "routing: {retrieval: {enabled: true, top_k: 3}}\n"
            "adapters:\n  engine: {quantize: none, max_model_len: 2048, max_batch_size: 4}\n"
            "  registry: {reconcile_interval_s: 2, retire_grace_s: 0}\n"
        )

    # the CLI -------------------------------------------------------------------
    def carafe(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``carafe ARGS --config ...``; the crasher may kill it meanwhile (then rc is -9)."""
        cmd = [sys.executable, "-c", "from carafe.cli.main import app; app()", *args, "--config", str(self.config)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env)
        with self._cli_lock:
            self.cli_running[proc.pid] = proc
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            with self._cli_lock:
                self.cli_running.pop(proc.pid, None)
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    def kill_a_cli(self, rng: Any, only: str | None = None) -> str | None:
        """kill -9 one running CLI command (of kind ``only``, e.g. "promote"); its name, or None."""
        with self._cli_lock:
            running = [p for p in self.cli_running.values() if only is None or only in p.args]
        if not running:
            return None
        victim = rng.choice(running)
        os.kill(victim.pid, signal.SIGKILL)
        return " ".join(str(a) for a in victim.args[3:5])

    def create_key(self, user: str, *extra: str) -> dict[str, Any] | None:
        """``carafe keys create``; the key's record when acknowledged (exit 0, JSON printed)."""
        r = self.carafe("keys", "create", "--user", user, "--rpm", "100000", "--json", *extra)
        return json.loads(r.stdout) if r.returncode == 0 else None

    # the gateway -----------------------------------------------------------------
    def start_gateway(self, timeout: float = 300) -> bool:
        """Start `carafe serve` and wait until /readyz says ready; False if it died or never got ready."""
        log = (self.dir / "gateway.log").open("ab")
        cmd = [sys.executable, "-c", "from carafe.cli.main import app; app()", "serve", "--config", str(self.config)]
        self.gateway = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        began = time.monotonic()
        while time.monotonic() < began + timeout:
            if self.gateway.poll() is not None:
                return False
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    self.ready = True
                    print(f"  gateway ready in {time.monotonic() - began:.1f} s", flush=True)
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        return False

    def kill_gateway(self) -> None:
        self.ready = False
        if self.gateway is not None and self.gateway.poll() is None:
            os.kill(self.gateway.pid, signal.SIGKILL)
            self.gateway.wait()

    @property
    def up(self) -> bool:
        """Started, answered ready, and not killed since."""
        return self.ready and self.gateway is not None and self.gateway.poll() is None

    def http(self, method: str, path: str, key: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=120, **kw)

    def cited(self, user: str, n: int) -> bool | None:
        """Whether retrieval as ``user`` cites document ``n`` (None: no answer, e.g. the gateway is down)."""
        body = {"model": BASE_ID, "max_tokens": 1, "messages": [{"role": "user", "content": f"zephyr{n}quartz"}]}
        try:
            r = self.http("POST", "/v1/chat/completions", self.keys[user], json=body)
        except httpx.HTTPError:
            return None
        if r.status_code != 200:
            return None
        return any(c["doc_id"].endswith(f"doc{n}.md") for c in r.json().get("citations") or [])
