"""Start and stop a real vLLM OpenAI server (the CPU build) for tests and benchmarks.

The server runs from its own virtual environment (``scripts/vllm-env``), found
through ``CARAFE_VLLM_VENV`` (default ``.carafe/vllm-venv``), and serves the
safetensors folder Carafe converts the base model into. Start-up takes about a
minute on two cores, so tests start it once per session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
SERVED_NAME = "SmolLM2-135M-Instruct"
MAX_LORAS = 4  # small: the LRU tests fill it


def vllm_python() -> Path | None:
    """The vLLM environment's python, or None when it is not installed."""
    venv = Path(os.environ.get("CARAFE_VLLM_VENV", REPO / ".carafe" / "vllm-venv"))
    py = venv / "bin" / "python"
    return py if py.is_file() else None


def base_model_dir() -> Path:
    """The converted (safetensors) base model folder; converts the GGUF once if needed."""
    from carafe.adapters.base_model import prepare_base_model

    models = Path(os.environ.get("CARAFE_TEST_MODELS", REPO / ".carafe" / "models"))
    return prepare_base_model("smollm2", models).folder


@dataclass
class VLLMServer:
    """One vLLM process; :meth:`restart` keeps its port, so clients reconnect."""

    python: Path
    model_dir: Path
    port: int
    log_path: Path
    max_loras: int = MAX_LORAS
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            str(self.python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            SERVED_NAME,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--enable-lora",
            "--max-loras",
            str(self.max_loras),
            "--max-lora-rank",
            "64",
            "--dtype",
            "float32",
            "--max-model-len",
            "2048",
            "--max-num-seqs",
            "16",
            "--disable-log-stats",
        ]

    def start(self, timeout: float = 400.0) -> None:
        env = dict(
            os.environ,
            VLLM_ALLOW_RUNTIME_LORA_UPDATING="True",
            VLLM_CPU_KVCACHE_SPACE="2",
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            VLLM_NO_USAGE_STATS="1",
            VLLM_LOGGING_LEVEL=os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
        )
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            self.command(), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.proc.returncode}; see {self.log_path}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        self.stop()
        raise TimeoutError(f"vLLM did not answer within {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        """Stop the process group (vLLM forks an engine core process)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_for_bench(log_name: str = "carafe-bench-vllm.log") -> VLLMServer:
    """A vLLM server on a free port for a benchmark; exits with the fix when vLLM is missing."""
    import tempfile

    from tests.servers import free_port

    python = vllm_python()
    if python is None:
        raise SystemExit("vLLM is not installed: run scripts/vllm-env (or set CARAFE_VLLM_VENV), or pass --vllm-url")
    server = VLLMServer(python, base_model_dir(), free_port(), Path(tempfile.gettempdir()) / log_name)
    t0 = time.monotonic()
    server.start()
    print(f"vLLM {server.url} started in {time.monotonic() - t0:.0f} s (log {server.log_path})")
    return server
