"""Carafe's native CPU kernels (``carafe/adapters/csrc``), built on first use and cached.

The fast path's int4 weights run through them: GGUF Q4_1 weight tiles times int8
activations with AVX512-VNNI (a portable scalar loop where the CPU lacks it), and a
decode step written in C++ (:class:`torch.classes.carafe.Decoder`), so that a token of a
small model is not spent calling 1,000 small ops from Python. They are compiled with
torch's C++ extension loader (``g++`` and ``ninja``) for this machine's CPU, once, into
``$CARAFE_NATIVE_CACHE`` (default ``~/.cache/carafe/native``); a later start loads them
in well under a second. Where they cannot be built, :func:`load` says why, and
``adapters.engine.kernels: auto`` serves int4 on torch's own kernel instead (``native``
makes it an error, ``torch`` never builds them).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
import threading
from pathlib import Path

import torch

log = logging.getLogger("carafe.adapters.native")

SOURCES = ("kernels.cpp", "decode.cpp", "ops.cpp")
_CSRC = Path(__file__).parent / "csrc"
_lock = threading.Lock()
_state: dict[str, object] = {}


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _build_key() -> str:
    """Sources, compiler target (this CPU), torch and Python: any change builds anew."""
    h = hashlib.sha256()
    for path in sorted(_CSRC.glob("*.[ch]*")):  # sources and headers
        h.update(path.name.encode() + path.read_bytes())
    h.update(f"{_cpu_flags()}|{platform.machine()}|{_march()}|{torch.__version__}|{sys.version_info[:2]}".encode())
    return h.hexdigest()[:16]


def _march() -> str:
    """The compiler's target: this CPU, or ``$CARAFE_NATIVE_MARCH`` (e.g. ``x86-64-v3`` for an image that
    must run on any AVX2 machine; without AVX512-VNNI the kernels take their portable loops)."""
    return os.environ.get("CARAFE_NATIVE_MARCH", "native")


def cache_dir() -> Path:
    root = os.environ.get("CARAFE_NATIVE_CACHE") or Path.home() / ".cache" / "carafe" / "native"
    return Path(root) / _build_key()


def load() -> str | None:
    """Build (first time on this machine) and load the kernels; None when loaded, else the reason
    they are not (the caller falls back to torch's kernels)."""
    with _lock:
        if "reason" in _state:
            return _state["reason"]  # type: ignore[return-value]
        _state["reason"] = reason = _build_and_load()
        return reason


def _build_and_load() -> str | None:
    if platform.machine() not in ("x86_64", "AMD64"):
        return f"the native kernels are written for x86-64, not {platform.machine()}"
    from filelock import FileLock

    folder = cache_dir()
    lib = folder / "carafe_native.so"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / "build.lock")):  # another process building it: wait, then load its build
            _build_or_load(folder, lib)
    except Exception as exc:  # no compiler, no ninja, a failed build: serve on torch's kernels
        lines = str(exc).strip().splitlines()
        errors = [line.strip() for line in lines if "error" in line.lower() and "Error building" not in line]
        return f"could not build the native kernels ({(errors or lines or [type(exc).__name__])[0][:300]})"
    if not torch.ops.carafe.vnni():
        log.warning("built without AVX512-VNNI (CPU or CARAFE_NATIVE_MARCH): the native kernels run portable loops")
    return None


def _build_or_load(folder: Path, lib: Path) -> None:
    from torch.utils import cpp_extension

    if lib.exists():
        torch.ops.load_library(str(lib))  # type: ignore[no-untyped-call]  # torch typing
        return
    log.info("building Carafe's native kernels for this CPU (once, about a minute) in %s", folder)
    # ninja from the environment's bin folder (a dependency of carafe)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    # -fopenmp: at::parallel_for expands to OpenMP pragmas here; at run time they use torch's own libgomp
    cpp_extension.load(
        name="carafe_native",
        sources=[str(_CSRC / s) for s in SOURCES],
        extra_cflags=["-O3", f"-march={_march()}", "-fno-math-errno", "-fopenmp"],
        extra_ldflags=["-fopenmp"],
        build_directory=str(folder),
        is_python_module=False,
        verbose=False,
    )
