"""Workloads of :mod:`benchmarks.ab`: the synthetic mixes, and a trace window
(:mod:`benchmarks.trace`) at its loads (compressions, rates, or multiples of stock's
saturation rate)."""

from __future__ import annotations

import json

from benchmarks import trace, workloads


def trace_base(args) -> trace.TraceWorkload:
    """The trace window of ``--workload trace`` at its own time scale, prompts clipped to the
    engine's ``max_model_len`` (from ``--engine-args``) less their output."""
    max_model_len = json.loads(args.engine_args).get("max_model_len")
    return trace.load(args.trace, start=args.trace_start, n=args.n, seed=args.seed,
                      max_model_len=max_model_len, name="trace")


def workload_for(args, cmd: dict, base: trace.TraceWorkload | None):
    """The workload a command names: a mix, or the trace window at the command's
    compression (None: every request at t=0)."""
    if base is None:
        return workloads.make(cmd["workload"], args.n, args.seed, max_len=args.max_len,
                              rate=args.rate)
    compression = cmd["compression"]
    return base.compressed(float("inf") if compression is None else compression,
                           cmd["workload"])


def mixes(args) -> list:
    """The synthetic mixes of ``--workload``."""
    return [workloads.make(w, args.n, args.seed, max_len=args.max_len, rate=args.rate)
            for w in args.workload.split(",")]


def trace_loads(args, base: trace.TraceWorkload,
                saturation: float | None) -> list[tuple[trace.TraceWorkload, dict]]:
    """The loads of a trace replay, each the window at one compression: ``(workload, load)``
    with ``load`` what the JSON records of it."""
    if args.load_factors:
        out = []
        for lf in (float(x) for x in args.load_factors.split(",")):
            w = base.at_rate(lf * saturation, name=f"trace_{lf:g}xsat")
            out.append((w, {"load_factor": lf, "rate_req_per_s": w.rate,
                            "compression": w.compression}))
        return out
    if args.rate:
        w = base.at_rate(args.rate, name=f"trace_{args.rate:g}rps")
        return [(w, {"rate_req_per_s": w.rate, "compression": w.compression})]
    out = []
    for c in (float(x) for x in (args.compression or "1").split(",")):
        w = base.compressed(c, name=f"trace_{c:g}x")
        out.append((w, {"rate_req_per_s": w.rate, "compression": c}))
    return out


def saturation_record(args, baseline: str, measured: dict | None) -> dict:
    """The JSON's ``saturation``: stock's rate on the window with every request at t=0,
    ``measured`` (that run's record) or given by ``--saturation-rate``."""
    definition = (f"{baseline} arm, after warm-up: the trace window with every "
                  "request at t=0; saturation rate = requests / wall time")
    if measured is None:
        return {"definition": definition, "arm": baseline,
                "requests_per_s": args.saturation_rate, "source": "given (--saturation-rate)"}
    return {"definition": definition, "arm": baseline, "source": "measured",
            "requests_per_s": measured["requests_per_s"],
            "output_tokens_per_s": measured["output_tokens_per_s"], "run": measured}


def describe_window(base: trace.TraceWorkload) -> str:
    d = base.describe()
    return (f"trace {d['source']} requests {d['start']}..{d['start'] + d['n'] - 1}: "
            f"{d['total_tokens']} prompt tokens ({d['clipped_prompts']} clipped to "
            f"max_model_len {d['max_model_len']} - output), {d['output_tokens_total']} "
            f"output tokens, {d['raw_span_s']:.1f} s at 1x ({base.rate:.2f} req/s). "
            f"Data: {trace.ATTRIBUTION}")


def describe_workload(args, w) -> str:
    if isinstance(w, trace.TraceWorkload):
        arrival = (f", trace arrivals compressed {w.compression:.3g}x: {w.rate:.2f} req/s "
                   f"over {w.span_s:.1f} s")
    else:
        arrival = (f", Poisson arrivals at {args.rate:g} req/s over "
                   f"{w.describe()['duration_s']:.1f} s" if args.rate else ", all at once")
    return (f"workload {w.name}: n={len(w.lengths)} tokens={w.total_tokens} "
            f"padding ratio {w.padding_ratio:.2f}x{arrival}")
