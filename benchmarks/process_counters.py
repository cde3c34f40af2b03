"""What a process spent over a stretch of a run, beside its wall time: CPU time (all threads,
and the calling thread's), the calling thread's context switches (involuntary ones: the host's
cores were busy), the garbage collector's time and collections per generation, and the host's
1-minute load average at both ends. Separates a slower host from more work in a step."""

from __future__ import annotations

import gc
import os
import resource
import time

_GC = {"s": 0.0, "t": 0.0}
"""The garbage collector's time in this process since the first :class:`ProcessCounters` (``s``)
and the start of the collection in progress (``t``)."""


def _gc_timer(phase: str, info: dict) -> None:
    if phase == "start":
        _GC["t"] = time.perf_counter()
    else:
        _GC["s"] += time.perf_counter() - _GC["t"]


class ProcessCounters:
    """Counters since the last :meth:`reset` (or construction), read by :meth:`read`. One
    garbage-collector callback serves every instance of a process (installed by the first)."""

    def __init__(self) -> None:
        if _gc_timer not in gc.callbacks:
            gc.callbacks.append(_gc_timer)
        self._start = self._now()

    def _now(self) -> dict:
        proc = resource.getrusage(resource.RUSAGE_SELF)
        thread = resource.getrusage(getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF))
        return {"wall_s": time.perf_counter(), "cpu_user_s": proc.ru_utime,
                "cpu_sys_s": proc.ru_stime, "thread_cpu_s": time.thread_time(),
                "thread_involuntary_switches": thread.ru_nivcsw,
                "thread_voluntary_switches": thread.ru_nvcsw, "gc_s": _GC["s"],
                "gc_collections": [g["collections"] for g in gc.get_stats()],
                "loadavg_1m": os.getloadavg()[0]}

    def reset(self) -> None:
        self._start = self._now()

    def read(self) -> dict:
        end, start = self._now(), self._start
        out = {k: round(end[k] - start[k], 4) for k in end
               if k not in ("gc_collections", "loadavg_1m")}
        out["gc_collections"] = [b - a for a, b in zip(start["gc_collections"],
                                                       end["gc_collections"])]
        out["loadavg_1m"] = [start["loadavg_1m"], end["loadavg_1m"]]
        return out
