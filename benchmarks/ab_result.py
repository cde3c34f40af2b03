"""The JSON of :mod:`benchmarks.ab`: per-arm spreads and paired ratios against the baseline
(:func:`benchmarks.analysis.compare`), the run record, and the per-step timing file."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import analysis, harness, step_timing

METRICS = {  # name: higher is better
    "prefill_tokens_per_s": True, "wall_s": False, "ttft_mean_s": False, "ttft_p50_s": False,
    "ttft_p99_s": False, "engine_steps": False, "split_prompts": False,
    "output_tokens_per_s": True, "requests_per_s": True,
}


def aggregate(reps: dict[str, list[dict]], baseline: str) -> dict:
    """``per_arm``: each metric's spread over repetitions; ``ratios_vs_<baseline>``: each
    arm's paired ratios to the baseline, for the metrics measured in every repetition."""
    per_arm = {arm: {m: analysis.spread([r[m] for r in rows]) for m in
                     [*METRICS, "mean_prefill_fill", "packed_share"]
                     if all(r.get(m) is not None for r in rows)}
               for arm, rows in reps.items()}
    ratios = analysis.compare(reps, baseline, METRICS)
    complete = {arm: {m: r for m, r in by_metric.items() if r["n"] == len(reps[arm])}
                for arm, by_metric in ratios.items()}
    return {"per_arm": per_arm, "ratios_vs_" + baseline: complete}


def steps_path(args) -> Path | None:
    if args.steps_out:
        return Path(args.steps_out)
    if args.out and args.step_timing == "on":
        out = Path(args.out)
        return out.with_name(out.stem + "_steps.json")
    return None


def save(args, payload: dict, state: dict) -> None:
    harness.write_json(args.out, payload)
    path = steps_path(args)
    if path is not None and state["steps"]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({  # compact: one object per (workload, arm, rep)
            "columns": step_timing.COLUMNS, "doc": step_timing.__doc__.split("\n\n")[1],
            "git_commit": payload.get("git_commit"), "device": payload.get("device"),
            "steps": state["steps"]}, separators=(",", ":")) + "\n")


def per_workload(mixes: list, arms: list[str], reps: dict, loads: dict,
                 baseline: str) -> dict:
    """Each workload run so far: those cut short (``complete_reps`` < ``repetitions``) are
    aggregated over the repetitions every arm finished."""
    out = {}
    for w in mixes:
        done = min(len(reps.get(w.name, {}).get(a, [])) for a in arms)
        if not done:
            continue
        runs = {a: reps[w.name][a][:done] for a in arms}
        digests = {a: [r["first_tokens_digest"] for r in rows] for a, rows in runs.items()}
        out[w.name] = {
            "workload": w.describe(),
            **({"load": loads[w.name]} if w.name in loads else {}),
            "complete_reps": done,
            "same_first_tokens_as_baseline": {a: digests[a] == digests[baseline] for a in arms},
            "runs": runs,
            **aggregate(runs, baseline),
        }
    return out


def result(args, arms: list[str], mixes: list, reps: dict, infos: dict,
           state: dict | None = None) -> dict:
    """The JSON of the workloads run so far."""
    state = state or {"base": None, "loads": {}, "saturation": None, "steps": {}}
    baseline = "stock" if "stock" in arms else arms[0]
    base = state["base"]
    if base is not None:
        kind, arrivals = "offline A/B, trace replay", "trace"
    else:
        kind = "offline A/B, prefill only" if args.max_tokens == 1 else "offline A/B"
        arrivals = f"poisson {args.rate:g} req/s" if args.rate else "offline (all at once)"
    out = {
        "benchmark": kind,
        **harness.environment(),
        "model": args.model, "model_shape": args.model_shape, "seed": args.seed,
        "entry_point": args.entry_point, "prefix_caching": args.prefix_caching,
        "repetitions": args.reps, "chunked_prefill": args.chunked,
        "max_tokens": "trace (GeneratedTokens)" if base is not None else args.max_tokens,
        "baseline": baseline, "arrivals": arrivals,
        "rate_req_per_s": args.rate if base is None else None,
        "engine_processes": "one per run" if args.isolate else "one per arm, kept alive",
        "arms": infos,
        "workloads": per_workload(mixes, arms, reps, state["loads"], baseline),
    }
    if base is not None:
        out["trace"] = {**base.describe(), "loads": state["loads"],
                        "load_factors": args.load_factors, "compression_arg": args.compression,
                        "rate_arg": args.rate}
        out["saturation"] = state["saturation"]
        path = steps_path(args)
        out["step_timing_file"] = path.name if path is not None else None
    return out
