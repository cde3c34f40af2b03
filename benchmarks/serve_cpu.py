"""CPU accounting of a serving run: CPU seconds of a ``vllm serve`` process tree (the API
server and its child processes) and, with the client's, each part's share of the run's wall
time: whether the API server or the client kept up with the replay."""

from __future__ import annotations

import contextlib


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of a ``vllm serve`` process tree: ``api_server`` (the
    process itself) and ``engine`` (its child processes: the engine core and any workers); {}
    where the process is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        own, children = root.cpu_times(), root.children(recursive=True)
    except psutil.Error:
        return {}
    engine = 0.0
    for child in children:
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            engine += times.user + times.system
    return {"api_server": own.user + own.system, "engine": engine}


def cpu_busy(before: dict[str, float], after: dict[str, float], client_cpu_s: float | None,
             wall_s: float) -> dict[str, float]:
    """CPU seconds per wall second of a run: the API server, the engine processes and the
    client (1.0: one core busy for the whole run)."""
    if wall_s <= 0:
        return {}
    out = {k: round((after[k] - before[k]) / wall_s, 3) for k in before if k in after}
    if client_cpu_s is not None:
        out["client"] = round(client_cpu_s / wall_s, 3)
    return out
