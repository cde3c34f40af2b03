"""docs/results.md's section of a trace simulator calibration (:mod:`benchmarks.trace_calib`):
the simulator's ratios beside the GPU's, point by point; by prompt-length class where the GPU
runs recorded per-request TTFTs; the step model beside measured steps."""

from __future__ import annotations

from pathlib import Path

from benchmarks import report


def calibration_table(path: Path, d: dict) -> list[str]:
    """The simulator's ratios beside the GPU's, point by point, with the decisions on both."""
    device = d["points"][0]["device"] if d["points"] else "-"
    arms = d.get("simulator_arm") or ", ".join(sorted({p["sim"]["simulator_arm"]
                                                         for p in d["points"]}))
    side = "GPU" if str(device).startswith("GPU") else "server"
    lines = [f"#### Trace simulator against the {side} ({device}, simulator arm "
             f"`{arms}`, CPU, commit {str(d['git_commit'])[:10]})",
             "", f"| {side} result, vLLM, budget, load | metric | {side} | simulator | within "
             f"{d['tolerance']:.0%} | inside {side} spread | overtakes / split per run, {side} vs "
             f"simulator | preemptions per run, stock / prepack, {side} vs simulator |",
             "|---|---|---|---|---|---|---|---|"]
    for p in d["points"]:
        g, s = p["gpu"], p["sim"]
        where = f"`{p['gpu_file']}`, {p['vllm']}, {p['budget']}, {p['load']:g}x"
        decided = (f"{g['overtakes_per_run']:.0f} / {g['split_per_run']:.0f} vs "
                   f"{s['overtakes_per_run']:.0f} / {s['split_per_run']:.0f}")
        if p["same_admissions_on_gpu"]:
            decided += f" ({side}: stock's admissions, its ratios are noise)"
        preempted = _preempted(g, s)
        for m, a in p["agreement"].items():
            lines.append(f"| {where} | {m} | {report.fmt_ratio(g['ratios'][m])} | "
                         f"{s['ratios'][m]:.2f} | {'yes' if a['within_15pct'] else 'no'} | "
                         f"{'yes' if a['within_gpu_spread'] else 'no'} | {decided} | "
                         f"{preempted} |")
            where = decided = preempted = ""
    return (lines + ["", f"`{path.name}`", ""] + _by_length(d["points"], side)
            + _step_checks(d.get("step_model_checks") or {}))


def _preempted(gpu: dict, sim: dict) -> str:
    """Each arm's preemptions per run, GPU vs simulator ("-" where either did not count them)."""
    g, s = gpu.get("preemptions_per_run"), sim.get("preemptions_per_run")
    if not (g and s):
        return "-"
    return (f"{g['stock']:.0f} / {g['prepack']:.0f} vs "
            f"{s['stock']:.0f} / {s['prepack']:.0f}")


def _by_length(points: list[dict], side: str) -> list[str]:
    """Per point with length classes: the ratio of each class's mean TTFT, GPU vs simulator."""
    points = [p for p in points if p.get("by_length")]
    if not points:
        return []
    classes = list(dict.fromkeys(c for p in points for c in p["by_length"]))
    lines = [f"By prompt-length class (tokens), the class's mean TTFT, prepack over stock, "
             f"{side} vs simulator (reported, not calibrated; requests per class: "
             "`serve_lengths_*.json`):", "",
             f"| {side} result, budget, load | " + " | ".join(classes) + " |",
             "|---" * (1 + len(classes)) + "|"]
    for p in points:
        cells = [(f"{report.fmt_ratio(b['gpu'])} vs {b['sim']:.2f}"
                  + ("" if b["within_15pct"] else " (beyond 15%)")) if (b := p["by_length"].get(c))
                 else "-" for c in classes]
        lines.append(f"| `{p['gpu_file']}`, {p['budget']}, {p['load']:g}x | "
                     + " | ".join(cells) + " |")
    return lines + [""]


def _step_checks(checks: dict) -> list[str]:
    """The step model beside measured GPU steps: mean step (ms), measured vs model."""
    if not checks:
        return []
    lines = ["The step model beside the measured GPU steps (mean ms, measured / model; every "
             "step of each file, warm-up included):", "",
             "| steps file | model / measured | decode requests | decode only | with prompt "
             "tokens |", "|---|---|---|---|---|"]
    for name, c in checks.items():
        rows: dict[str, dict] = {}
        for b in c["bins"]:
            rows.setdefault(b["decodes"], {})[b["prompt_tokens"]] = (
                f"{b['measured_ms']:.1f} / {b['model_ms']:.1f} ({b['steps']})")
        head = f"`{name}` | {c['model_over_measured']:.2f}"
        for decodes, cells in rows.items():
            lines.append(f"| {head} | {decodes} | {cells.get(False, '-')} | "
                         f"{cells.get(True, '-')} |")
            head = " | "
    return lines + [""]
