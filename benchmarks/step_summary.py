"""The few numbers a run's record carries from its step timings (a :mod:`benchmarks.step_timing`
steps file's columns, one run)."""

from __future__ import annotations

import statistics


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def decode_only_parts(cols: dict[str, list], period: dict[int, float]) -> dict:
    """Medians (ms) over the decode-only steps with fewer than 50 requests waiting (whose
    work an admission order changes only through their batch): the step period and the
    stepping thread's parts of it (scheduler, executor calls and their CPU time, output
    update), and the median decode batch."""
    idx = [i for i in period if cols["prefill"][i] == 0 and cols["waiting_before"][i] < 50]
    if not idx:
        return {"steps": 0}
    def median_ms(values) -> float:
        return round(1000 * statistics.median(values), 3)

    parts = {"sched_ms": "sched_s", "exec_ms": "exec_s", "exec_cpu_ms": "exec_cpu_s",
             "update_ms": "update_s"}
    return {"steps": len(idx), "period_ms": median_ms(period[i] for i in idx),
            **{key: median_ms(cols[col][i] for i in idx)
               for key, col in parts.items() if col in cols},
            "decode_reqs": statistics.median(cols["decode_reqs"][i] for i in idx)}


def summarize(cols: dict[str, list]) -> dict:
    """A run's step statistics: counts, mean scheduler wall/CPU time, mean step period
    (gap between consecutive model outputs, over steps that decode: no idle time), the
    decode-only step period by how many requests were waiting (the scheduler's cost growing
    with its queue shows here), its parts (:func:`decode_only_parts`) and the process's
    counters (where the steps carry them)."""
    n = len(cols.get("t", []))
    if not n:
        return {"steps": 0}
    # Step period: each model output's time minus the previous output's, for steps that
    # decode (requests were running before them, so the engine was not idle in between).
    done = sorted((t, i) for i, t in enumerate(cols["t_out"]) if t >= 0)
    period = {i: t - t_prev for (t_prev, _), (t, i) in zip(done, done[1:])
              if cols["decode_reqs"][i] > 0}
    gaps = list(period.values())
    buckets = ((0, 50), (50, 150), (150, 300), (300, 10 ** 9))
    decode_gap = {}
    for lo, hi in buckets:
        xs = [p for i, p in period.items() if cols["prefill"][i] == 0
              and lo <= cols["waiting_before"][i] < hi]
        label = f"{lo}-{hi}" if hi < 10 ** 9 else f">={lo}"
        decode_gap[label] = {"steps": len(xs), "mean_ms": round(1000 * _mean(xs), 3)
                             if xs else None}
    return {
        "steps": n,
        "prefill_steps": sum(1 for x in cols["prefill"] if x),
        "sched_ms_mean": round(1000 * _mean(cols["sched_s"]), 4),
        "sched_cpu_ms_mean": round(1000 * _mean(cols["sched_cpu_s"]), 4),
        "sched_ms_total": round(1000 * sum(cols["sched_s"]), 1),
        "exec_ms_mean": round(1000 * _mean(cols["exec_s"]), 4),
        "exec_s_total": round(sum(cols["exec_s"]), 3),
        "prefill_tokens": sum(cols["prefill"]), "decode_rows": sum(cols["decode_reqs"]),
        "step_period_ms_mean": round(1000 * _mean(gaps), 4) if gaps else None,
        "decode_only_step_period_by_waiting": decode_gap,
        "decode_only_parts": decode_only_parts(cols, period),
        **({"process": cols["process"]} if "process" in cols else {}),
    }
