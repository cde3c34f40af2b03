"""Paired ratios and their spread over repetitions, and the verdict drawn from a spread: the
one place every benchmark turns measurements into claims."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def spread(values: list[float]) -> dict:
    values = sorted(values)
    n = len(values)
    return {"mean": sum(values) / n, "min": values[0], "max": values[-1],
            "median": values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2,
            "n": n}


def verdict(ratio: dict, higher_is_better: bool) -> str:
    """'win'/'loss' only where the whole spread of per-repetition ratios excludes 1.0, over
    at least two repetitions ('single run' otherwise: one ratio has no spread)."""
    if ratio.get("n", 2) < 2:
        return "single run"
    if ratio["min"] > 1.0:
        return "win" if higher_is_better else "loss"
    if ratio["max"] < 1.0:
        return "loss" if higher_is_better else "win"
    return "tie"


def paired_ratio(arm: Sequence[float | None], base: Sequence[float | None],
                 higher_is_better: bool) -> dict | None:
    """``arm[i] / base[i]`` over the repetitions where both were measured (the baseline
    nonzero): their spread and verdict, or None when no pair was measured."""
    ratios = [a / b for a, b in zip(arm, base, strict=True) if a is not None and b]
    if not ratios:
        return None
    out = spread(ratios)
    out["verdict"] = verdict(out, higher_is_better)
    return out


def compare(rows: Mapping[str, Sequence[Mapping]], baseline: str,
            metrics: Mapping[str, bool]) -> dict[str, dict[str, dict]]:
    """Every arm but the baseline against it, metric by metric (``metrics``: name -> higher is
    better), over paired repetitions (row ``i`` of an arm against row ``i`` of the baseline)."""
    out: dict[str, dict[str, dict]] = {}
    for arm, arm_rows in rows.items():
        if arm == baseline:
            continue
        base_rows = rows[baseline][:len(arm_rows)]
        arm_rows = arm_rows[:len(base_rows)]
        ratios = {}
        for metric, higher in metrics.items():
            r = paired_ratio([row.get(metric) for row in arm_rows],
                             [row.get(metric) for row in base_rows], higher)
            if r is not None:
                ratios[metric] = r
        out[arm] = ratios
    return out
