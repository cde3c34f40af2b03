"""Serving grid points measured in parts: the paired runs of several ``serve_ab`` results that ran
the same point (device, vLLM, the plugin's code, model, each arm's server arguments, trace window,
load and rate, warm-up) pooled into one ratio with its spread
(:func:`benchmarks.analysis.paired_ratio`). Each result pairs its arms' runs inside its own
invocation; pooling keeps those pairs. Besides the client's ratios, the server's split of each
pair: the engine's part of the first-token time (engine queue + prefill), the rest of the
server's TTFT (API server, engine input and output paths) and what the client sees beyond the
server."""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks import analysis, harness, report
from benchmarks.serve_report import BASELINE, engine_ms, engine_ratio, pairs

ARM = "prepack"
PER_RUN_ARGS = ("--prepack-stats-path",)  # options whose value is each invocation's own file
PREEMPTIONS = "vllm:num_preemptions_total"
CLIENT = {"mean_ttft_ms": False, "p99_ttft_ms": False, "request_goodput": True}


def point_key(result: dict, load: str) -> tuple:
    """What must be equal for two results' runs at ``load`` to be repetitions of one point. The
    code is the plugin's (:func:`benchmarks.harness.plugin_code` of the result's commit, else
    the commit): commits that differ outside ``vllm_prepack/``, or only in its docstrings,
    comments and option help texts, run the same engines."""
    w = result.get("workload") or {}
    arms = result.get("arms") or {}
    commit = result.get("git_commit")
    return (result.get("device"), result.get("vllm"), harness.plugin_code(commit) or commit,
            result.get("model_shape"),
            tuple((a, server_arguments(arms.get(a, {}).get("serve_args") or []))
                  for a in (BASELINE, ARM)),
            w.get("source"), w.get("start"), w.get("n"), load,
            round(float(result.get("rates", {}).get(load) or 0), 2),
            bool(result.get("warmup_replay")), bool(result.get("aa")))


def server_arguments(args: list[str]) -> tuple[str, ...]:
    """A server's arguments without the per-invocation ones (:data:`PER_RUN_ARGS`)."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg not in PER_RUN_ARGS and (i == 0 or args[i - 1] not in PER_RUN_ARGS):
            out.append(arg)
    return tuple(out)


def split(run: dict) -> dict[str, float] | None:
    """A completed run's first-token time in three parts (ms means), None without the server's
    split: ``engine`` (``queue``, vLLM's engine queue time, + ``prefill``, from the step that
    first schedules a request to its first token), ``server_rest`` (server TTFT - engine) and
    ``client_rest`` (client TTFT - server TTFT, :func:`beyond_server`)."""
    engine, client_rest = engine_ms(run), beyond_server(run)
    if None in (engine, client_rest):
        return None
    m = run["metrics"]
    return {"engine": engine, "queue": m["server_queue_mean_ms"],
            "prefill": m["server_prefill_mean_ms"],
            "server_rest": m["server_ttft_mean_ms"] - engine, "client_rest": client_rest}


def beyond_server(run: dict) -> float | None:
    """The client's mean TTFT beyond the server's (ms), None where either is missing."""
    server = (run.get("metrics") or {}).get("server_ttft_mean_ms")
    client = (run.get("bench") or {}).get("mean_ttft_ms")
    return None if None in (server, client) else client - server


def point_groups(results: list[tuple[Path, dict]]) -> list[list[tuple[Path, dict, str]]]:
    """The results' loads grouped by point (:func:`point_key`): each group's (path, result,
    load) in the order given; a load without a completed pair is left out."""
    groups: dict[tuple, list[tuple[Path, dict, str]]] = {}
    for path, result in results:
        for load in result.get("per_load", {}):
            if pairs(result, load):
                groups.setdefault(point_key(result, load), []).append((path, result, load))
    return list(groups.values())


def group_pairs(parts: list[tuple[Path, dict, str]]) -> list[tuple[dict, dict]]:
    """A point's (stock, prepack) pairs over its results (one group of :func:`point_groups`)."""
    return [pair for _, result, load in parts for pair in pairs(result, load)]


def client_ratios(both: list[tuple[dict, dict]]) -> dict[str, dict | None]:
    """The client's measures (:data:`CLIENT`) as paired ratios over (stock, other arm) pairs."""
    return {m: analysis.paired_ratio([p["bench"].get(m) for _, p in both],
                                     [s["bench"].get(m) for s, _ in both], higher)
            for m, higher in CLIENT.items()}


def pooled_points(results: list[tuple[Path, dict]]) -> list[dict]:
    """Every point that two or more results measured: its files, its pairs, the client's
    paired ratios, the engine's part as a paired ratio, each arm's mean split and its
    preemptions over the pairs."""
    points = []
    for parts in point_groups(results):
        if len(parts) < 2:
            continue
        both = group_pairs(parts)
        ratios = client_ratios(both)
        ratios["engine"] = engine_ratio(both)
        splits = [(split(s), split(p)) for s, p in both]
        splits = [(s, p) for s, p in splits if s and p]
        means = {arm: {part: sum(sp[i][part] for sp in splits) / len(splits)
                       for part in ("engine", "queue", "prefill", "server_rest",
                                    "client_rest")}
                 for i, arm in enumerate((BASELINE, ARM))} if splits else {}
        points.append({"files": [p.name for p, _, _ in parts], "load": parts[0][2],
                       "aa": bool(parts[0][1].get("aa")),
                       "pairs": len(both), "ratios": ratios, "split_means": means,
                       "preemptions": preempted(both),
                       "by_file": [_geometric_mean(pairs(result, load))
                                   for _, result, load in parts]})
    return points


def _geometric_mean(both: list[tuple[dict, dict]]) -> tuple[float, int] | None:
    """The geometric mean of one invocation's mean-TTFT ratios (prepack / stock) and its pairs."""
    r = client_ratios(both)["mean_ttft_ms"]
    return (math.exp(r["log_mean"]), r["n"]) if r and "log_mean" in r else None


def preempted(both: list[tuple[dict, dict]]) -> dict[str, float] | None:
    """Each arm's preemptions (vLLM's counter) summed over the (stock, prepack) pairs ``both``;
    None where there are no pairs or a run did not scrape the counter."""
    runs = [run for pair in both for run in pair]
    if not runs or any(PREEMPTIONS not in (run.get("metrics") or {}) for run in runs):
        return None
    return {arm: sum(run["metrics"][PREEMPTIONS] for run in runs if run["arm"] == arm)
            for arm in (BASELINE, ARM)}


def section(results: list[tuple[Path, dict]]) -> list[str]:
    """docs/results.md's table of the points measured in parts (nothing where there are none)."""
    points = pooled_points(results)
    if not points:
        return []
    lines = ["#### Serving points measured in parts (pairs pooled over invocations)", "",
             "Pooled: one device, vLLM, plugin code (`vllm_prepack` at each file's commit "
             "without docstrings, comments and help texts), server arguments, window, load and "
             "warm-up. "
             "Engine: engine queue + prefill (vLLM's queue time, then from the step that "
             "first schedules a request to its first token); rest: the rest of the server's "
             "TTFT; client: the "
             "client's TTFT beyond the server's. Ratios: mean [min-max] over the pairs, median. "
             "Means in ms, prepack / stock; preemptions: "
             "the pairs' sum, prepack / stock; by file: each invocation's geometric mean "
             "of its pairs' TTFT mean ratios (its pairs), in the files' order: the pairs of "
             "one invocation share two server starts and a host. A/A: a second stock server "
             "in the prepack arm's place (`serve_ab --aa`), its ratios stock B / stock.", "",
             "| files | load | pairs | TTFT mean vs stock | TTFT p99 vs stock | goodput vs stock "
             "| engine vs stock | engine: queue + prefill | rest | client | preemptions | "
             "TTFT mean by file |", "|---" * 12 + "|"]
    for pt in points:
        r, m = pt["ratios"], pt["split_means"]
        cells = ["-"] * 3
        if m:
            arms = (m[ARM], m[BASELINE])
            cells = [" / ".join(f"{x['queue']:.0f} + {x['prefill']:.0f}" for x in arms),
                     *(" / ".join(f"{x[part]:.0f}" for x in arms)
                       for part in ("server_rest", "client_rest"))]
        lines.append(f"| {', '.join(f'`{f}`' for f in pt['files'])} | {pt['load']}x"
                     f"{' (A/A)' if pt['aa'] else ''} | "
                     f"{pt['pairs']} | "
                     + " | ".join(_with_median(r[k]) for k in (*CLIENT, "engine"))
                     + f" | {' | '.join(cells)} | {_preemptions(pt['preemptions'])} | "
                     + ", ".join("-" if g is None else f"{g[0]:.2f} ({g[1]})"
                                 for g in pt["by_file"]) + " |")
    return [*lines, ""]


def _preemptions(counts: dict[str, float] | None) -> str:
    return f"{counts[ARM]:.0f} / {counts[BASELINE]:.0f}" if counts else "-"


def _with_median(r: dict | None) -> str:
    """A pooled ratio: ``mean [min-max]`` with its verdict, then its median."""
    return report.fmt_ratio(r) + (f", median {r['median']:.2f}" if r else "")


def outside_engine(result: dict) -> dict[str, dict[str, float | None]]:
    """Per arm, over its completed runs at every load, mean ms: ``engine`` (engine queue +
    prefill), ``outside`` (the client's TTFT beyond it) and ``beyond_server`` (the client's TTFT
    beyond the server's; recorded where the engine's split is not). None where a run lacks it."""
    out = {}
    for arm in (BASELINE, ARM):
        runs = [r for r in result.get("runs", []) if r.get("arm") == arm and r.get("ok")]
        splits = [split(r) for r in runs]
        out[arm] = {"engine": _mean([sp and sp["engine"] for sp in splits]),
                    "outside": _mean([sp and sp["server_rest"] + sp["client_rest"]
                                      for sp in splits]),
                    "beyond_server": _mean([beyond_server(r) for r in runs])}
    return out


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values and None not in values else None


def host_section(results: list[tuple[Path, dict]]) -> list[str]:
    """docs/results.md's table of each GPU serving result's time outside the engine: where it is
    large, the API server's and the client's paths, not the admission order, decide a pair."""
    rows = []
    for path, result in results:
        if not str(result.get("device", "")).startswith("GPU"):
            continue
        parts = outside_engine(result)
        cells = [" / ".join("-" if parts[a][k] is None else f"{parts[a][k]:.0f}"
                            for a in (BASELINE, ARM)) for k in ("engine", "outside",
                                                                "beyond_server")]
        h = result.get("host")
        host = f"{h.get('cpu_model')}, probe {h.get('probe_ms')} ms" if h else "-"
        aa = " (A/A: stock / stock B)" if result.get("aa") else ""
        rows.append(f"| `{path.name}`{aa} | {result['device'][5:]} | "
                    f"{str(result.get('time_utc'))[:16]} | {' | '.join(cells)} | {host} |")
    if not rows:
        return []
    return ["#### Time outside the engine, GPU serving results", "",
            "Mean ms over each arm's completed runs, stock / prepack: engine: engine queue + "
            "prefill; outside: the client's TTFT beyond it (API server, engine input and output "
            "paths, client); beyond server: the client's TTFT beyond the server's. Host: the "
            "CPU the run saw (recorded from commit 1018104 on).", "",
            "| file | device | started (UTC) | engine | outside | beyond server | host |",
            "|---" * 7 + "|", *rows, ""]
