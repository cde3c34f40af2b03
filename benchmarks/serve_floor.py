"""A/A floors of serving points: where a point was also run with stock in both arms
(``serve_ab --aa``), its A/B ratios set against those A/A ratios. An A/A pair's ratio is what two
identical servers differ by at that point (the API server's and the client's paths, the host,
the GPU), so an A/B ratio is judged twice: against 1.0 (:func:`benchmarks.analysis.verdict`) and
against the floor (:func:`benchmarks.analysis.against_floor`, Welch's t-test on the logs)."""

from __future__ import annotations

from pathlib import Path

from benchmarks import analysis
from benchmarks.serve_parts import (
    CLIENT,
    client_ratios,
    group_pairs,
    point_groups,
    server_arguments,
)
from benchmarks.serve_report import BASELINE, engine_ratio

SLOWER_HOST_PROBE_MS = 16.0
"""The one-core probe (:func:`benchmarks.harness.host_info`) from which a host is a slower one.
The lent H100 hosts measured 8.3-15.0 ms or 17.2-18.5 ms; at 2048 tokens and 1.0x, the client's
mean TTFT outside the engine was 41-208 ms a run on the first and 444-897 ms on the second. Two
stock servers on one differ by what they differ by there, so a floor is of one host class."""

MEASURES = {**CLIENT, "engine": False}
"""The client's measures and the engine's part of the first-token time (engine queue + prefill,
:func:`benchmarks.serve_report.engine_ratio`): what the admission order moves."""


def host_class(result: dict) -> str | None:
    """``"fast"`` or ``"slower"`` by the host's one-core probe (:data:`SLOWER_HOST_PROBE_MS`),
    None for a result that recorded none."""
    probe = (result.get("host") or {}).get("probe_ms")
    return None if probe is None else "slower" if probe >= SLOWER_HOST_PROBE_MS else "fast"


def floor_key(result: dict, load: str) -> tuple:
    """What an A/A result and an A/B result must share for the first to be the second's floor:
    device, host class, vLLM, model, stock's server arguments, trace window, load and rate,
    warm-up (not the plugin's code, which an A/A run does not run)."""
    w = result.get("workload") or {}
    stock = (result.get("arms") or {}).get(BASELINE, {})
    return (result.get("device"), host_class(result), result.get("vllm"),
            result.get("model_shape"),
            server_arguments(stock.get("serve_args") or []), w.get("source"), w.get("start"),
            w.get("n"), load, round(float(result.get("rates", {}).get(load) or 0), 2),
            bool(result.get("warmup_replay")))


def by_floor(parts: list[tuple[Path, dict, str]]) -> dict[tuple, list[tuple[Path, dict, str]]]:
    """A point's results (a group of :func:`benchmarks.serve_parts.point_groups`) by
    :func:`floor_key`, in the order given: a point pooled over hosts of both classes has a part
    on each."""
    out: dict[tuple, list] = {}
    for part in parts:
        out.setdefault(floor_key(part[1], part[2]), []).append(part)
    return out


def compared_points(results: list[tuple[Path, dict]]) -> list[dict]:
    """Every A/B point (one result or several pooled, :func:`benchmarks.serve_parts.point_groups`;
    on each host class apart, :func:`by_floor`) that has an A/A floor: its files and pairs, the
    floor's files and pairs, both sides' ratios of :data:`MEASURES` and, per measure, the A/B
    ratio against the floor."""
    groups = point_groups(results)
    floors: dict[tuple, list] = {}
    for parts in groups:
        if parts[0][1].get("aa"):
            for key, same in by_floor(parts).items():
                floors.setdefault(key, []).extend(same)
    return [_compared(parts, floors[key]) for group in groups if not group[0][1].get("aa")
            for key, parts in by_floor(group).items() if key in floors]


def _compared(parts: list[tuple[Path, dict, str]], floor: list[tuple[Path, dict, str]]) -> dict:
    ab, aa = group_pairs(parts), group_pairs(floor)
    ratios, floor_ratios = client_ratios(ab), client_ratios(aa)
    ratios["engine"], floor_ratios["engine"] = engine_ratio(ab), engine_ratio(aa)
    return {"files": [p.name for p, _, _ in parts], "floor_files": [p.name for p, _, _ in floor],
            "load": parts[0][2], "pairs": len(ab), "floor_pairs": len(aa), "ratios": ratios,
            "floor": floor_ratios,
            "against_floor": {m: analysis.against_floor(ratios[m], floor_ratios[m], higher)
                              for m, higher in MEASURES.items()}}


def _cell(r: dict | None) -> str:
    return f"{r['median']:.2f} [{r['min']:.2f}-{r['max']:.2f}]" if r else "-"


def section(results: list[tuple[Path, dict]]) -> list[str]:
    """docs/results.md's table of A/B points beside their A/A floors (nothing where none)."""
    points = compared_points(results)
    if not points:
        return []
    lines = ["#### Serving points against their A/A floors", "",
             "A/A: the same point with a second stock server in the prepack arm's place "
             "(`serve_ab --aa`), on a host of the same class (one-core probe under "
             f"{SLOWER_HOST_PROBE_MS:.0f} ms, or from it: the slower hosts). Ratios: median "
             "[min-max] over the pairs, A/B (prepack / stock) and A/A (stock B / stock). "
             "Against the floor: Welch's t-test at 95% on the two sides' log-ratios, pairs as "
             "the units (an invocation's pairs share its server starts, so a win or loss is "
             "less certain than the test says); a tie is an A/B ratio within what two stock "
             "servers differ by.", "",
             "| A/B files | A/A files | load | pairs A/B / A/A | measure | A/B | A/A | "
             "against the floor |", "|---" * 8 + "|"]
    names = {"mean_ttft_ms": "TTFT mean", "p99_ttft_ms": "TTFT p99",
             "request_goodput": "goodput", "engine": "engine queue + prefill, mean"}
    for pt in points:
        head = (f"| {', '.join(f'`{f}`' for f in pt['files'])} | "
                f"{', '.join(f'`{f}`' for f in pt['floor_files'])} | {pt['load']}x | "
                f"{pt['pairs']} / {pt['floor_pairs']} |")
        for i, m in enumerate(MEASURES):
            verdict = pt["against_floor"][m]
            mark = f"**{verdict}**" if verdict in ("win", "loss") else verdict
            lines.append((head if i == 0 else "| | | | |") + f" {names[m]} | "
                         f"{_cell(pt['ratios'][m])} | {_cell(pt['floor'][m])} | {mark} |")
    return [*lines, ""]

