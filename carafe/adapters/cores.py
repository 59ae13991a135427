"""Which cores the engine computes on: chosen from the cores this process may use, not a constant.

Through the gateway the engine shares the machine with the event loop that parses requests and writes
every streamed token. With as many engine threads as cores, OpenMP's workers spin on every core between
parallel regions and the event loop starves: on 2 cores the gateway delivered 99 tok/s of a single stream
that the same engine runs at 244 tok/s in process (issue 25). So, by default, one core of the process's
affinity is left to the event loop and the engine takes the rest (at least one); optionally its thread
is pinned to them, as llama.cpp's server keeps HTTP threads apart from its compute threads.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("carafe.adapters.cores")


def usable_cores() -> list[int]:
    """The cores this process may run on (its affinity), in order."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def compute_cores(threads: int | None) -> list[int]:
    """The cores for the engine's ``threads`` (None: all usable cores but one, kept for the event loop)."""
    cores = usable_cores()
    if threads:
        return cores[-threads:] if threads <= len(cores) else cores
    return cores[1:] if len(cores) > 1 else cores


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
