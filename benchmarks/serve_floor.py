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

MEASURES = {**CLIENT, "engine": False}
"""The client's measures and the engine's part of the first-token time (engine queue + prefill,
:func:`benchmarks.serve_report.engine_ratio`): what the admission order moves."""


def floor_key(result: dict, load: str) -> tuple:
    """What an A/A result and an A/B result must share for the first to be the second's floor:
    device, vLLM, model, stock's server arguments, trace window, load and rate, warm-up (not the
    plugin's code, which an A/A run does not run)."""
    w = result.get("workload") or {}
    stock = (result.get("arms") or {}).get(BASELINE, {})
    return (result.get("device"), result.get("vllm"), result.get("model_shape"),
            server_arguments(stock.get("serve_args") or []), w.get("source"), w.get("start"),
            w.get("n"), load, round(float(result.get("rates", {}).get(load) or 0), 2),
            bool(result.get("warmup_replay")))


def compared_points(results: list[tuple[Path, dict]]) -> list[dict]:
    """Every A/B point (one result or several pooled, :func:`benchmarks.serve_parts.point_groups`)
    that has an A/A floor: its files and pairs, the floor's files and pairs, both sides' ratios
    of :data:`MEASURES` and, per measure, the A/B ratio against the floor."""
    groups = point_groups(results)
    floors: dict[tuple, list] = {}
    for parts in groups:
        if parts[0][1].get("aa"):
            floors.setdefault(floor_key(parts[0][1], parts[0][2]), []).extend(parts)
    points = []
    for parts in groups:
        floor = floors.get(floor_key(parts[0][1], parts[0][2]))
        if parts[0][1].get("aa") or not floor:
            continue
        ab, aa = group_pairs(parts), group_pairs(floor)
        ratios, floor_ratios = client_ratios(ab), client_ratios(aa)
        ratios["engine"], floor_ratios["engine"] = engine_ratio(ab), engine_ratio(aa)
        points.append({
            "files": [p.name for p, _, _ in parts], "floor_files": [p.name for p, _, _ in floor],
            "load": parts[0][2], "pairs": len(ab), "floor_pairs": len(aa), "ratios": ratios,
            "floor": floor_ratios,
            "against_floor": {m: analysis.against_floor(ratios[m], floor_ratios[m], higher)
                              for m, higher in MEASURES.items()}})
    return points


def _cell(r: dict | None) -> str:
    return f"{r['median']:.2f} [{r['min']:.2f}-{r['max']:.2f}]" if r else "-"


def section(results: list[tuple[Path, dict]]) -> list[str]:
    """docs/results.md's table of A/B points beside their A/A floors (nothing where none)."""
    points = compared_points(results)
    if not points:
        return []
    lines = ["#### Serving points against their A/A floors", "",
             "A/A: the same point with a second stock server in the prepack arm's place "
             "(`serve_ab --aa`). Ratios: median [min-max] over the pairs, A/B (prepack / "
             "stock) and A/A (stock B / stock). Against the floor: Welch's t-test at 95% on "
             "the two sides' log-ratios, pairs as the units (an invocation's pairs share "
             "its server starts, so a win or loss is less certain than the test says); a tie "
             "is an A/B ratio within what two stock servers differ by.", "",
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

