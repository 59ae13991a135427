"""The engine's supervisor: a dead or stuck worker becomes "not ready" and 503s within seconds, never a hang.

The scheduler's worker loop stamps :attr:`Scheduler.heartbeat` on every turn (at least every
half second when idle). A small daemon thread watches it:

- the worker thread has ended (an exception escaped its loop): the engine is failed for good;
  every waiting and running request gets :class:`EngineUnavailable`, and so does every later one;
- the heartbeat is older than ``stall_s`` while the worker thread sleeps and uses no CPU — it waits
  on something that does not come: the engine *stalls*; pending requests fail the same way and
  new ones are refused until the worker turns again (then it is ready again). A pass that is merely
  slow, even on a machine so loaded that its thread gets a sliver of a core, keeps its thread
  runnable and its CPU clock moving, and is left alone up to ``BUSY_FACTOR`` times ``stall_s``.

Readiness (``LocalEngine.ready``) is ``scheduler.failure is None``.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from carafe.adapters.errors import EngineUnavailable
from carafe.adapters.scheduler import Scheduler

log = logging.getLogger("carafe.adapters.supervisor")
BUSY_FACTOR = 10  # a worker computing without a turn for this many stall periods is stuck in a loop
_WORKING_CPU_S = 0.02  # CPU seconds a silent worker must have used to count as computing


def _thread_cpu(thread: threading.Thread) -> float | None:
    """CPU seconds ``thread`` has used (None where the platform cannot tell)."""
    try:
        assert thread.ident is not None
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except (AssertionError, AttributeError, OSError, ProcessLookupError):
        return None


def _runnable(thread: threading.Thread) -> bool:
    """Whether the kernel has ``thread`` running or waiting for a core (not asleep on a lock or I/O)."""
    try:
        stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "R"


class Supervisor:
    """Watches one scheduler's worker; :meth:`check` is one look (the watch thread calls it every ``interval``)."""

    def __init__(self, scheduler: Scheduler, stall_s: float, interval: float = 0.25) -> None:
        self.scheduler = scheduler
        self.stall_s = stall_s
        self.interval = interval
        self._stop = threading.Event()
        self._beat = scheduler.heartbeat
        self._beat_cpu: float | None = None
        self._stalled = False

    def start(self) -> None:
        threading.Thread(target=self._watch, name="carafe-engine-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # the watch itself must never die
                log.exception("engine supervisor check failed")

    def check(self) -> None:
        s = self.scheduler
        thread = s.thread
        if thread is None:  # not running yet, or stopped on purpose
            return
        if not thread.is_alive():
            if s.failure is None:
                s.failure = "the engine's worker thread ended; the gateway needs a restart"
                log.error(s.failure)
            s.fail_all(EngineUnavailable(s.failure))
            return
        cpu = _thread_cpu(thread)
        if s.heartbeat != self._beat:
            self._beat, self._beat_cpu = s.heartbeat, cpu
            if self._stalled:
                self._stalled, s.failure = False, None
                log.warning("the engine is making progress again: ready")
            return
        silent = time.monotonic() - s.heartbeat
        if silent <= self.stall_s:
            return
        used = None if cpu is None or self._beat_cpu is None else cpu - self._beat_cpu
        computing = (used is not None and used > _WORKING_CPU_S) or _runnable(thread)
        if computing and silent <= BUSY_FACTOR * self.stall_s:
            return
        if not self._stalled:
            log.error("the engine has made no progress for %.1f s: not ready", silent)
        self._stalled = True
        s.failure = f"the engine has made no progress for {silent:.0f} s; retry shortly"
        s.fail_all(EngineUnavailable(s.failure))
