"""Serving A/B drive: the workload of a run, the stock saturation run, the TTFT SLO, the
measured (repetition, load factor) pairs in alternating arm order, progress and estimates."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from typing import Any

from benchmarks import workloads
from benchmarks.serve_options import ServeOptions
from benchmarks.serve_pool import ARMS, SERVER_MEANS, Pool
from benchmarks.serve_runs import run_bench
from benchmarks.serve_traces import TraceBook, output_lengths
from benchmarks.trace import ATTRIBUTION, load_trace

SATURATION_DEFINITION = (
    "stock arm, after warm-up: the whole trace (same prompt and output lengths) sent at t=0 "
    "(every timestamp 0); saturation rate = completed requests / benchmark duration "
    "(vllm bench serve request_throughput)")


def max_model_len(serve_args: str) -> int | None:
    argv = shlex.split(serve_args)
    for i, a in enumerate(argv):
        if a == "--max-model-len" and i + 1 < len(argv):
            return int(argv[i + 1])
        if a.startswith("--max-model-len="):
            return int(a.split("=", 1)[1])
    return None


def estimate_run_s(n: int, rate: float, saturation: float, overhead_s: float) -> float:
    """Arrival span, or the time to serve everything at saturation when that is longer."""
    return max(n / rate, n / saturation) + overhead_s


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def build_workload(opts: ServeOptions) -> tuple[Any, list[int], list[float] | None, dict]:
    """The prompt lengths (a mix, or a trace window), output lengths, unit-rate arrivals
    (None: Poisson) and the JSON's ``workload`` description."""
    limit = max_model_len(opts.serve_args)
    if opts.workload == "trace":
        mix = load_trace(opts.trace, start=opts.trace_start, n=opts.n, seed=opts.seed,
                         max_model_len=limit, name="trace")
        outs = list(mix.output_lens)
        # The window's inter-arrival times at a mean rate of 1 request/s.
        unit = [a * mix.rate for a in mix.arrivals] if mix.span_s > 0 else None
        d = mix.describe()
        print(f"trace {d['source']} requests {d['start']}..{d['start'] + d['n'] - 1}: "
              f"{d['total_tokens']} prompt tokens ({d['clipped_prompts']} clipped), "
              f"{d['output_tokens_total']} output tokens, {mix.rate:.2f} req/s at 1x. "
              f"Data: {ATTRIBUTION}", flush=True)
        workload = {**d, "arrivals": "the trace window's inter-arrival times, time axis "
                                     "compressed to load factor x saturation rate",
                    "output_len": "trace (GeneratedTokens)"}
        return mix, outs, unit, workload
    mix = workloads.make(opts.workload, opts.n, opts.seed, max_len=opts.max_len)
    outs = output_lengths(opts.output_len, opts.n, opts.seed)
    if limit is not None and max(a + b for a, b in zip(mix.lengths, outs)) > limit:
        raise SystemExit(f"longest prompt + output exceeds --max-model-len {limit}: "
                         "pass --max-len")
    workload = {**mix.describe(), "arrival": "poisson", "output_len": opts.output_len,
                "arrivals": "Poisson at load factor x saturation rate; unit-rate arrivals "
                            "seeded per repetition, scaled by 1/rate"}
    return mix, outs, None, workload


def saturation(opts: ServeOptions, book: TraceBook, pool: Pool) -> tuple[float, float, dict]:
    """Stock's saturation rate (given, or measured with the whole trace at t=0), the client's
    overhead per run, and the JSON's ``saturation`` record."""
    if opts.saturation_rate:  # measured before (a grid measured in parts)
        return opts.saturation_rate, 0.0, {
            "definition": SATURATION_DEFINITION, "arm": "stock",
            "request_throughput": opts.saturation_rate,
            "source": "given (--saturation-rate), not measured in this run"}
    trace, entries = book.get("saturation", None, f"{opts.seed}/saturation")
    sat_run = run_bench(pool, "stock", trace, entries, None, "saturation", opts)
    if not sat_run["ok"]:
        raise RuntimeError(f"saturation run failed: {sat_run['problems']}")
    rate = sat_run["bench"]["request_throughput"]
    overhead = max(0.0, sat_run["wall_s"] - sat_run["bench"]["duration"])
    return rate, overhead, {
        "definition": SATURATION_DEFINITION, "arm": "stock",
        "request_throughput": rate, "source": "measured",
        "output_throughput": sat_run["bench"]["output_throughput"],
        "total_token_throughput": sat_run["bench"]["total_token_throughput"],
        "duration_s": sat_run["bench"]["duration"],
        "client_overhead_s": round(overhead, 2), "run": sat_run}


def decide_slo(opts: ServeOptions, book: TraceBook, pool: Pool, rate: float) -> dict:
    """The JSON's ``slo`` record: fixed, or ``--slo-factor`` x stock's median TTFT on a
    calibration trace at ``rate`` (the lowest load)."""
    if opts.ttft_slo_ms is not None:
        slo = {"ttft_ms": opts.ttft_slo_ms, "source": "fixed (--ttft-slo-ms)"}
    else:
        lowest = min(opts.load_factor_list)
        trace, entries = book.get("calibration", rate, f"{opts.seed}/calibration")
        cal = run_bench(pool, "stock", trace, entries, None, "slo_calibration", opts)
        if not cal["ok"]:
            raise RuntimeError(f"SLO calibration run failed: {cal['problems']}")
        slo = {"ttft_ms": opts.slo_factor * cal["bench"]["median_ttft_ms"],
               "source": "calibrated",
               "definition": f"{opts.slo_factor:g} x stock median TTFT at "
                             f"{lowest:g}x saturation (calibration trace, not reused)",
               "calibration_run": cal}
    slo["decided_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return slo


def arm_order(rep: int, load_index: int) -> tuple[str, ...]:
    """The arms' order on one (repetition, load) trace: alternating from one repetition to the
    next at every load, and from one load to the next within a repetition."""
    return ARMS if (rep + load_index) % 2 == 0 else ARMS[::-1]


def measure_pairs(opts: ServeOptions, book: TraceBook, pool: Pool, result: dict,
                  sat: float, overhead: float, bar: Any, save: Callable[[], None],
                  t_start: float) -> None:
    """Both arms on each (repetition, load factor) trace, arms in alternating order, each run
    appended to ``result["runs"]`` and saved; stops at ``--time-budget-s``."""
    slo_ms = result["slo"]["ttft_ms"]
    pairs = [(rep, lf) for rep in range(opts.reps) for lf in opts.load_factor_list]
    warmed: set = set()  # servers that replayed a trace before their first measured run
    for rep, lf in pairs:
        rate = lf * sat
        est = 2 * estimate_run_s(opts.n, rate, sat, overhead)
        if opts.time_budget_s and time.monotonic() - t_start + est > opts.time_budget_s:
            result["status"] = f"partial: time budget {opts.time_budget_s}s reached"
            print(result["status"], flush=True)
            return
        trace, entries = book.get(f"rep{rep}_lf{lf:g}", rate, f"{opts.seed}/rep{rep}")
        for position, arm in enumerate(arm_order(rep, opts.load_factor_list.index(lf))):
            if opts.warmup_replay and (server := pool.get(arm)) not in warmed:
                result["warmup_runs"].append(warmup_replay(opts, book, pool, arm, rate,
                                                           f"{arm}_lf{lf:g}_rep{rep}"))
                warmed.add(server)
            record = run_bench(pool, arm, trace, entries, slo_ms,
                               f"{arm}_lf{lf:g}_rep{rep}", opts)
            record.update(load_factor=lf, rate=rate, rep=rep, position=position)
            result["runs"].append(record)
            progress(record)
            # Re-estimate the client overhead from the measured runs (the saturation
            # run's includes the client's own start).
            measured = [r["wall_s"] - r["bench"]["duration"] for r in result["runs"]
                        if r["ok"] and r["bench"] and r["bench"].get("duration")]
            if measured:
                overhead = max(0.0, sorted(measured)[len(measured) // 2])
            bar.set_postfix(load=f"{lf:g}x", arm=arm, rep=rep)
            bar.update()
            save()


def warmup_replay(opts: ServeOptions, book: TraceBook, pool: Pool, arm: str, rate: float,
                  tag: str) -> dict:
    """``--warmup-replay``: a server's replay before its first measured run, not measured: that
    run's lengths and arrivals with prompts of their own (no prefix-cache hits carry over)."""
    trace, entries = book.get(f"warmup_{tag}", rate, f"{opts.seed}/warmup_{tag}")
    record = run_bench(pool, arm, trace, entries, None, f"warmup_{tag}", opts)
    record.update(rate=rate, measured=False)
    progress(record)
    return record


def progress(record: dict) -> None:
    """One line per run."""
    b = record.get("bench") or {}
    line = (f"TTFT mean {b['mean_ttft_ms']:.0f} ms p99 {b['p99_ttft_ms']:.0f} ms, "
            f"{b['request_throughput']:.2f} req/s, {b['output_throughput']:.0f} out tok/s"
            if record.get("ok") else f"FAILED: {record.get('problems')}")
    m = record.get("metrics") or {}
    split = [m.get(k) for k in SERVER_MEANS]  # the server's own split of its mean TTFT; TPOT
    if None not in split:
        line += ("; server TTFT / engine queue / prefill / TPOT mean {:.0f} / {:.0f} / {:.0f} / "
                 "{:.1f} ms").format(*split)
    print(f"[{time.strftime('%H:%M:%S')}] {record['name']} (rate {record['rate']:.2f} req/s):"
          f" {line}, wall {record['wall_s']:.1f}s", flush=True)


def print_estimates(opts: ServeOptions, sat: float, overhead: float, pool: Pool) -> None:
    """What the measured runs still take, printed once the servers are up: both arms' runs, one
    warm-up replay per server (``--warmup-replay``) and, where the servers take turns, a start
    (the stock server's measured one) for every pair."""
    load_factors = opts.load_factor_list
    start_s = max((s["ready_s"] + s["warmup_s"] for s in pool.starts["stock"]), default=0.0)
    runs = [estimate_run_s(opts.n, lf * sat, sat, overhead) for lf in load_factors]
    restarts = len(load_factors) * opts.reps if pool.one_at_a_time else 0
    total = (2 * sum(runs) * opts.reps + restarts * start_s
             + (2 * runs[0] if opts.warmup_replay else 0))
    starts = (f"{restarts} server start(s) of ~{start_s:.0f}s" if pool.one_at_a_time else
              "both servers up: " + ", ".join(f"{arm} started in {started[-1]['ready_s']:.0f}s"
                                              for arm, started in pool.starts.items() if started))
    print(f"saturation {sat:.2f} req/s; client overhead {overhead:.1f}s per run; "
          f"per run (s): " + ", ".join(f"{lf:g}x {s:.0f}" for lf, s in zip(load_factors, runs))
          + f"; estimate for the rest: {total:.0f}s ({starts})", flush=True)
