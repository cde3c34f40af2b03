"""Serving A/B results: per load factor each arm's spread and the prepack/stock paired ratios
(:mod:`benchmarks.analysis`) and the markdown section (plots: :mod:`benchmarks.serve_plots`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from benchmarks import analysis, report
from benchmarks.serve_pool import ARMS, SERVER_MEANS, arm_label, comparison

BASELINE = "stock"
RATIO_METRICS = {  # bench result key: higher is better
    "mean_ttft_ms": False, "median_ttft_ms": False, "p99_ttft_ms": False,
    "mean_tpot_ms": False, "request_throughput": True, "request_goodput": True,
    "output_throughput": True,
}


def aggregate(runs: list[dict], load_factors: Sequence[float], reps: int) -> dict:
    """Per load factor: each arm's spread over repetitions, and prepack/stock ratios over the
    repetitions where both arms completed."""
    out: dict = {}
    for lf in load_factors:
        by = {(r["arm"], r["rep"]): r for r in runs
              if r.get("load_factor") == lf and r.get("ok")}
        per_arm = {}
        for arm in ARMS:
            rows = [by[(arm, rep)]["bench"] for rep in range(reps) if (arm, rep) in by]
            per_arm[arm] = {m: analysis.spread([row[m] for row in rows])
                            for m in [*RATIO_METRICS, "total_token_throughput"]
                            if rows and all(row.get(m) is not None for row in rows)}
        paired = pairs({"runs": runs}, f"{lf:g}")
        rows = {arm: [pair[i]["bench"] for pair in paired] for i, arm in enumerate(ARMS)}
        ratios = analysis.compare(rows, BASELINE, RATIO_METRICS)["prepack"]
        out[f"{lf:g}"] = {"paired_reps": len(paired), "per_arm": per_arm,
                          "ratios_prepack_vs_stock": ratios}
    return out


# -- report ---------------------------------------------------------------------------------


def _mean(per_arm: dict, metric: str, fmt: str) -> str:
    s = per_arm.get(metric)
    return format(s["mean"], fmt) if s else "-"


def decisions(result: dict, load: str) -> dict | None:
    """The prepack arm's decisions at ``load`` from the packing statistics of its completed runs:
    overtakes and split prompts per run, and the longest wait any request was left with after a
    step (None: no statistics). No overtake and no wait left: it made stock's admissions."""
    runs = [r["packing"] for r in completed_runs(result, load)
            if r.get("arm") != BASELINE and r.get("packing")]
    if not runs:
        return None
    per_run = {k: sum(r.get(k) or 0 for r in runs) / len(runs)
               for k in ("overtakes", "partial_prefills")}
    return {"overtakes_per_run": per_run["overtakes"],
            "split_per_run": per_run["partial_prefills"],
            "max_oldest_wait_s": max(r.get("max_oldest_wait_s") or 0.0 for r in runs)}


def same_admissions(decided: dict) -> bool:
    """No request overtaken and none left waiting after any step: stock's admissions, so the
    point's ratios measure run-to-run noise, not the policy."""
    return decided["overtakes_per_run"] == 0 and decided["max_oldest_wait_s"] == 0


def _decisions_cell(result: dict, load: str) -> str:
    if (d := decisions(result, load)) is None:
        return "-"
    cell = f"{d['overtakes_per_run']:.0f} / {d['split_per_run']:.0f}"
    return cell + " (stock's admissions)" if same_admissions(d) else cell


def completed_runs(result: dict, load: str, arm: str | None = None) -> list[dict]:
    """The runs at ``load`` that completed, of ``arm`` (None: of every arm)."""
    return [r for r in result.get("runs", []) if arm in (None, r.get("arm")) and r.get("ok")
            and f"{r.get('load_factor', -1):g}" == load]


def pairs(result: dict, load: str) -> list[tuple[dict, dict]]:
    """(stock run, prepack run) at ``load`` per repetition where both completed."""
    by = {(r["arm"], r.get("rep")): r for r in completed_runs(result, load)}
    reps = sorted({rep for arm, rep in by if arm == BASELINE and (ARMS[1], rep) in by})
    return [(by[(BASELINE, rep)], by[(ARMS[1], rep)]) for rep in reps]


def engine_ms(run: dict) -> float | None:
    """A run's engine part of the first-token time: the server's engine-queue and prefill means
    (ms) added; None where the server's split was not recorded."""
    m = run.get("metrics") or {}
    parts = (m.get("server_queue_mean_ms"), m.get("server_prefill_mean_ms"))
    return None if None in parts else sum(parts)


def engine_ratio(paired: list[tuple[dict, dict]]) -> dict | None:
    """The engine's part of the first-token time (:func:`engine_ms`), prepack over stock, over
    the (stock, prepack) pairs where both recorded the server's split: what the admission order
    moves, without the API server's and the client's parts."""
    return analysis.paired_ratio([engine_ms(p) for _, p in paired],
                                 [engine_ms(s) for s, _ in paired], False)


def server_split(result: dict, load: str, arm: str) -> list[float | None]:
    """The server's own mean TTFT, engine-queue, prefill and per-output-token times (ms) of
    ``arm`` at ``load``, each the mean over its completed runs (None where no run recorded it)."""
    runs = [r.get("metrics") or {} for r in completed_runs(result, load, arm)]
    values = ([m[key] for m in runs if m.get(key) is not None] for key in SERVER_MEANS)
    return [sum(v) / len(v) if v else None for v in values]


def engine_floor(result: dict, load: str) -> float | None:
    """A floor under the prepack/stock mean-TTFT ratio at ``load`` for any admission order:
    the ratio if the engine's part of stock's first-token time (engine queue and prefill) were
    zero and the rest (API server, client) unchanged. The mean over stock's runs of 1 - (its
    engine-queue + prefill means) / its client TTFT mean; None where no run recorded the
    server's split."""
    floors = []
    for r in completed_runs(result, load, BASELINE):
        engine, ttft = engine_ms(r), (r.get("bench") or {}).get("mean_ttft_ms")
        if engine is not None and ttft:
            floors.append(1 - engine / ttft)
    return sum(floors) / len(floors) if floors else None


def _floor_line(result: dict) -> str:
    loads = list(result.get("per_load", {}))
    floors = {lf: engine_floor(result, lf) for lf in loads}
    cells = [f"{lf}x {f:.2f}" for lf, f in floors.items() if f is not None]
    if not cells:
        return ""
    engine = {lf: engine_ratio(pairs(result, lf)) for lf in loads}
    return ("Floor of the TTFT mean ratio, any order (stock's engine queue and prefill at zero, "
            "the rest of its TTFT unchanged): " + ", ".join(cells) + ". The engine's part "
            f"(engine queue + prefill), {arm_label(result, ARMS[1])} vs stock: " + ", ".join(
                f"{lf}x {report.fmt_ratio(r)}" for lf, r in engine.items() if r) + ".\n")


CPU_PARTS = {"api_server": "API server", "engine": "engine processes", "client": "client"}


def cpu_busy_means(result: dict, load: str, arm: str) -> dict[str, float]:
    """``arm``'s CPU seconds per wall second at ``load``, each part's mean over its runs."""
    runs = [r["cpu_busy"] for r in completed_runs(result, load, arm) if r.get("cpu_busy")]
    return {k: sum(b[k] for b in runs) / len(runs) for k in CPU_PARTS
            if runs and all(k in b for b in runs)}


def _cpu_line(result: dict) -> str:
    cells = []
    for lf in result.get("per_load", {}):
        stock, ours = (cpu_busy_means(result, lf, arm) for arm in ARMS)
        if parts := [k for k in CPU_PARTS if k in stock and k in ours]:
            cells.append(f"{lf}x " + ", ".join(f"{CPU_PARTS[k]} {stock[k]:.2f} / {ours[k]:.2f}"
                                               for k in parts))
    return ("" if not cells else "CPU seconds per wall second of a run, stock / "
            f"{arm_label(result, ARMS[1])} (1.00: one core busy throughout): "
            + "; ".join(cells) + ".\n")


def _split_cell(result: dict, load: str, arm: str) -> str:
    *ttft, tpot = server_split(result, load, arm)
    return " / ".join(["-" if v is None else f"{v:.0f}" for v in ttft]
                      + ["-" if tpot is None else f"{tpot:.1f}"])


def _per_rank_line(result: dict) -> str:
    """Data parallel: the prepack arm's per-rank statistics over its measured runs."""
    ranks: dict[str, dict[str, int]] = {}
    for run in result.get("runs", []):
        for name, p in (run.get("packing_per_rank") or {}).items():
            r = ranks.setdefault(name.rsplit(".", 2)[-2], {"admitted": 0, "steps": 0,
                                                            "throttled_steps": 0})
            for k in r:
                r[k] += p.get(k, 0)
    if not ranks:
        return ""
    return " Prepack statistics per DP rank over the measured runs: " + "; ".join(
        f"{rank} admitted {r['admitted']}, {r['steps']} steps, {r['throttled_steps']} "
        "throttled" for rank, r in sorted(ranks.items())) + "."


def _workload_words(w: dict) -> str:
    if w.get("arrival") == "trace":
        return (f"{w['source']} requests {w['start']}..{w['start'] + w['n'] - 1} ({w['n']} "
                f"requests, prompts {w['mean_len']:.0f} tokens mean, {w['clipped_prompts']} "
                f"clipped; outputs {w['mean_output_len']:.0f} mean) at the trace's "
                f"inter-arrival times, compressed to each load. Data: {w['attribution']}")
    return (f"{w['name']} mix, {w['n']} requests, padding {w['padding_ratio']:.1f}x, output "
            f"{w['output_len']} tokens, Poisson arrivals")


def _setup_words(result: dict) -> str:
    replay = (", then one unmeasured replay of its first measured run's trace with other prompts"
              if result.get("warmup_replay") else "")
    warmup = (f" Warm-up per server start: {result['warmup_requests']} requests{replay}."
              if "warmup_requests" in result else "")
    return warmup + report.host_words(result)


def render_section(result: dict) -> str:
    """A markdown section: setup line and one row per load factor and arm."""
    w = result["workload"]
    slo = result.get("slo") or {}
    sat = result.get("saturation") or {}
    shape = result.get("model_shape") or Path(result["model"]).name
    arms = result.get("arms", {})
    classes = ", ".join(f"{arm_label(result, a)}: "
                        f"`{str(arms.get(a, {}).get('scheduler_class')).rsplit('.', 1)[-1]}`"
                        for a in ARMS)
    lines = [
        f"#### Serving {comparison(result)}, {shape} ({result['device']}, "
        f"vLLM {result['vllm']}, "
        f"commit {str(result['git_commit'])[:10]}, {result['repetitions']} reps"
        + ("" if result.get("status", "complete") == "complete" else f"; {result['status']}")
        + ")", "",
        f"`vllm bench serve` timed trace: {_workload_words(w)}. Saturation (stock, all at t=0): "
        f"{sat.get('request_throughput', float('nan')):.2f} req/s. TTFT SLO "
        f"{slo.get('ttft_ms', float('nan')):.0f} ms ({slo.get('source')}). "
        f"Scheduler classes: {classes}.{_per_rank_line(result)}{_setup_words(result)}", "",
        "| load | rate req/s | arm | req/s | goodput req/s | TTFT mean ms | TTFT p99 ms | "
        "server TTFT / engine queue / prefill / TPOT mean ms | "
        "TPOT mean ms | overtakes / split prompts per run | TTFT mean vs stock | "
        "TTFT p99 vs stock | goodput vs stock |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lf, agg in result.get("per_load", {}).items():
        rate = result.get("rates", {}).get(lf)
        ratios = agg["ratios_prepack_vs_stock"]
        for arm in ARMS:
            pa = agg["per_arm"].get(arm, {})
            own = arm != BASELINE
            lines.append(
                f"| {lf}x | {rate:.2f} | {arm_label(result, arm)} | "
                f"{_mean(pa, 'request_throughput', '.2f')} | "
                f"{_mean(pa, 'request_goodput', '.2f')} | {_mean(pa, 'mean_ttft_ms', '.1f')} | "
                f"{_mean(pa, 'p99_ttft_ms', '.1f')} | {_split_cell(result, lf, arm)} | "
                f"{_mean(pa, 'mean_tpot_ms', '.1f')} | "
                f"{_decisions_cell(result, lf) if own else '-'} | "
                f"{report.fmt_ratio(ratios.get('mean_ttft_ms')) if own else '1'} | "
                f"{report.fmt_ratio(ratios.get('p99_ttft_ms')) if own else '1'} | "
                f"{report.fmt_ratio(ratios.get('request_goodput')) if own else '1'} |")
    lines.append("")
    if floor := _floor_line(result):
        lines.append(floor)
    if cpu := _cpu_line(result):
        lines.append(cpu)
    return "\n".join(lines)
