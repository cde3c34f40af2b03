"""What :mod:`benchmarks.ab` shows people: the ratio lines it prints, and a trace replay's
TTFT figures."""

from __future__ import annotations

import statistics
from pathlib import Path

from benchmarks import analysis, report


def ratio_lines(result: dict, is_trace: bool) -> list[str]:
    """One line per workload, arm and headline metric: its ratio to the baseline."""
    shown = (("ttft_mean_s", "ttft_p50_s", "ttft_p99_s", "output_tokens_per_s", "wall_s")
             if is_trace else ("prefill_tokens_per_s", "ttft_mean_s", "engine_steps"))
    lines = []
    for name, w in result["workloads"].items():
        for arm, ratios in w["ratios_vs_" + result["baseline"]].items():
            for metric in shown:
                if metric in ratios:
                    r = ratios[metric]
                    lines.append(f"{name:>12} {arm:>15} {metric:>22}: x{r['mean']:.3f} "
                                 f"[{r['min']:.3f}, {r['max']:.3f}] {r['verdict']}")
    return lines + (step_speed_lines(result) + host_lines(result) + engine_split_lines(result)
                    if is_trace else [])


def _mean_ms(runs: list[dict], key: str) -> float:
    """The mean over ``runs`` of each run's mean of its per-request ``key`` (seconds), in ms."""
    return sum(1e3 * sum(r[key]) / len(r[key]) for r in runs) / len(runs)


def engine_split_lines(d: dict) -> list[str]:
    """Per load, each arm's engine part of the TTFT where its runs recorded it per request:
    vLLM's queue time + prefill time (means over requests and repetitions, ms), and the
    requests vLLM preempted a run."""
    lines = []
    for name, w in d["workloads"].items():
        parts = []
        for arm, runs in w["runs"].items():
            if not runs or any(not r.get("queue_s") or not r.get("prefill_s") for r in runs):
                continue
            queue, prefill = (_mean_ms(runs, k) for k in ("queue_s", "prefill_s"))
            preempted = sum(sum(n > 0 for n in r.get("preemptions", ())) for r in runs)
            parts.append(f"{arm} {queue:.0f} + {prefill:.0f} ms, "
                         f"{preempted / len(runs):.1f} preempted a run")
        if parts:
            lines.append(f"Engine's part of the TTFT, {name} (vLLM's queue time + prefill "
                         "time, from a request's first step to its first token): "
                         + "; ".join(parts) + ".")
    return lines


def _decode_step_ms(run: dict) -> float | None:
    timing = (run.get("step_timing") or {}).get("decode_only_step_period_by_waiting") or {}
    return (timing.get("0-50") or {}).get("mean_ms")


def step_speed(w: dict, base: str) -> dict[str, dict]:
    """Per arm, its mean period of a decode-only step while fewer than 50 requests wait, over
    the baseline's, paired by repetition. The admission order changes such a step only through
    its batch; where launches dominate the step (``benchmarks.step_source``'s fit: a base plus a
    little per decode request), a ratio away from 1 is that arm's engine running slower."""
    out = {}
    base_runs = w["runs"][base]
    for arm, runs in w["runs"].items():
        if arm == base:
            continue
        n = min(len(runs), len(base_runs))
        r = analysis.paired_ratio([_decode_step_ms(x) for x in runs[:n]],
                                  [_decode_step_ms(x) for x in base_runs[:n]], False)
        if r:
            out[arm] = r
    return out


def step_speed_lines(d: dict) -> list[str]:
    """A trace replay's :func:`step_speed`, one sentence per load."""
    lines = []
    for name, w in d["workloads"].items():
        speeds = step_speed(w, d["baseline"])
        if speeds:
            lines.append(f"Decode-only step period with < 50 waiting, {name}, vs {d['baseline']} "
                         "(the admission order changes such a step only through its batch): "
                         + "; ".join(f"{arm} {report.fmt_ratio(r)}" for arm, r in speeds.items())
                         + ".")
    return lines


def _host_part(runs: list[dict]) -> str | None:
    """Means over ``runs`` of the decode-only steps' executor time and its thread CPU time,
    and of the engine process's counters, or None where a run lacks them."""
    timing = [r.get("step_timing") or {} for r in runs]
    parts = [t.get("decode_only_parts") or {} for t in timing]
    procs = [t.get("process") for t in timing]
    if not runs or any("exec_cpu_ms" not in p or not q for p, q in zip(parts, procs)):
        return None
    mean = statistics.fmean
    switches = mean(q["thread_involuntary_switches"] / max(q["wall_s"], 1e-9) for q in procs)
    return (f"executor {mean(p['exec_ms'] for p in parts):.2f} ms (its CPU "
            f"{mean(p['exec_cpu_ms'] for p in parts):.2f}), "
            f"{switches:.0f} involuntary switches/s, GC {mean(q['gc_s'] for q in procs):.2f} s, "
            f"host load {mean(q['loadavg_1m'][1] for q in procs):.1f}")


def host_lines(d: dict) -> list[str]:
    """Per load, each arm's host side of its decode-only steps with < 50 waiting (medians,
    means over repetitions) and the engine process's counters a run: where an arm's steps are
    slower, a thread that waited (wall beyond its CPU, involuntary switches, a loaded host)
    tells a busy host from more work."""
    lines = []
    for name, w in d["workloads"].items():
        parts = {arm: _host_part(runs) for arm, runs in w["runs"].items()}
        if parts and all(parts.values()):
            lines.append(f"Host side of the decode-only steps, {name}: "
                         + "; ".join(f"{arm} {p}" for arm, p in parts.items()) + ".")
    return lines


def _finish(fig, d: dict, what: str, bottom: float, path: Path) -> Path:
    budget = next(iter(d["arms"].values()))["resolved"]["max_num_batched_tokens"]
    report.suptitle(fig, what, d, f"{d['entry_point']}, budget {budget}")
    fig.text(0.01, 0.01, report.TRACE_CREDIT, fontsize=6)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return report.save_figure(fig, path)


def plot_trace_load(d: dict, path: Path) -> Path:
    """TTFT (mean, p99) against load, one line per arm (bars: min-max over repetitions)."""
    plt = report.pyplot()
    names = list(d["workloads"])

    def x_of(name: str) -> float:
        load = d["workloads"][name].get("load") or {}
        return load.get("load_factor", load.get("rate_req_per_s", 0.0))

    by_sat = all("load_factor" in (d["workloads"][n].get("load") or {}) for n in names)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, metric, label in ((axes[0], "ttft_mean_s", "TTFT mean (s)"),
                              (axes[1], "ttft_p99_s", "TTFT p99 (s)")):
        for arm in d["arms"]:
            pts = sorted((x_of(n), d["workloads"][n]["per_arm"][arm][metric]) for n in names
                         if metric in d["workloads"][n]["per_arm"].get(arm, {}))
            if pts:
                ax.errorbar([x for x, _ in pts], [s["mean"] for _, s in pts],
                            yerr=[[s["mean"] - s["min"] for _, s in pts],
                                  [s["max"] - s["mean"] for _, s in pts]],
                            marker="o", capsize=3, label=arm)
        ax.set_xlabel("load (x stock saturation)" if by_sat else "arrival rate (req/s)",
                      fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return _finish(fig, d, "Trace replay TTFT vs load", 0.04, path)


def plot_trace_cdf(d: dict, path: Path) -> Path:
    """TTFT CDFs, one panel per load, one line per arm (every repetition's requests)."""
    plt = report.pyplot()
    names = list(d["workloads"])
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), squeeze=False)
    for ax, name in zip(axes[0], names):
        report.cdf_panel(ax, {arm: [t for row in rows for t in row["ttft_s"]]
                              for arm, rows in d["workloads"][name]["runs"].items()}, name,
                         log=True)
    axes[0][0].set_ylabel("share of requests")
    axes[0][-1].legend(fontsize=7)
    return _finish(fig, d, "Trace replay TTFT CDF", 0.05, path)


def plot_trace(d: dict, stem: Path) -> list[Path]:
    """A trace replay's TTFT against load and its TTFT CDFs: ``<stem>_ttft_load.png`` and
    ``<stem>_ttft_cdf.png``."""
    if not d["workloads"]:
        return []
    return [plot_trace_load(d, stem.with_name(stem.name + "_ttft_load.png")),
            plot_trace_cdf(d, stem.with_name(stem.name + "_ttft_cdf.png"))]
