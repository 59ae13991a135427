"""Which cores the engine computes on, and how its threads wait: chosen for a process that also streams.

Through the gateway the engine shares the machine with the event loop that parses requests and writes
every streamed token. OpenMP's workers, left to their default, spin on their cores between parallel
regions and the event loop starves: on 2 cores the gateway delivered 99 tok/s of a single stream that
the same engine runs at 244 tok/s in process (issue 25). So the serving entry point asks OpenMP to let
its workers sleep between passes (:func:`quiet_openmp`; the native pass is one parallel region per
step, so the wake-up is paid once a step). Over HTTP on 2 loaded cores that was as fast or faster than
spinning, while one engine thread instead of two halved the throughput; so the engine takes every core
the process may use (its affinity, not a constant) unless ``adapters.engine.threads`` says fewer, and
can be pinned to them (``pin_threads``), leaving the others to the event loop.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("carafe.adapters.cores")


def quiet_openmp() -> None:
    """For an entry point, before torch is imported: OpenMP workers sleep between parallel regions instead of
    spinning (an explicit ``OMP_WAIT_POLICY`` is kept)."""
    if "torch" in sys.modules and "OMP_WAIT_POLICY" not in os.environ:
        log.warning("torch is already loaded: OMP_WAIT_POLICY can no longer change")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def usable_cores() -> list[int]:
    """The cores this process may run on (its affinity), in order."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def compute_cores(threads: int | None) -> list[int]:
    """The cores for the engine's ``threads`` (None: every usable core); the last ones, so that the first
    stay with the event loop when pinned."""
    cores = usable_cores()
    return cores[-threads:] if threads and threads < len(cores) else cores


def claim(cores: list[int], *, pin: bool) -> int:
    """On the engine thread, before its first parallel region: use ``len(cores)`` intra-op threads and, with
    ``pin``, run this thread (and the OpenMP workers it starts) on ``cores`` only. Returns the thread count."""
    import torch

    torch.set_num_threads(len(cores))
    if pin:
        try:
            os.sched_setaffinity(0, cores)  # Linux: 0 is the calling thread
        except (AttributeError, OSError) as exc:
            log.warning("could not pin the engine to cores %s: %s", cores, exc)
    log.info("engine: %d compute thread(s) on cores %s%s", len(cores), cores, " (pinned)" if pin else "")
    return len(cores)
