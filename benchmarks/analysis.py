"""Paired ratios and their spread over repetitions, and the verdict drawn from a spread: the
one place every benchmark turns measurements into claims."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def spread(values: list[float]) -> dict:
    values = sorted(values)
    n = len(values)
    return {"mean": sum(values) / n, "min": values[0], "max": values[-1],
            "median": values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2,
            "n": n}


# Two-sided 95% critical values of Student's t by degrees of freedom (n - 1); 1.96 beyond.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086)


def verdict(ratio: dict, higher_is_better: bool) -> str:
    """'win'/'loss' where the mean log-ratio differs from 0 by a two-sided t-test at 95% over at
    least two repetitions ('single run' otherwise: one ratio has no spread); 'tie' else.

    Every repetition on one side of 1.0 is not enough: two servers making the same admissions
    differ by up to 1.7x from run to run near saturation, so a spread must be tight for its
    width to count. A ratio recorded without ``log_sd`` (older results) keeps the rule it was
    written with: a win or loss where the whole spread excludes 1.0."""
    n = ratio.get("n", 2)
    if n < 2:
        return "single run"
    if "log_sd" in ratio:
        t_crit = _T95[n - 2] if n - 2 < len(_T95) else 1.96
        shift = ratio["log_mean"]
        if shift == 0 or abs(shift) * math.sqrt(n) <= t_crit * ratio["log_sd"]:
            return "tie"
        better = (shift > 0) == higher_is_better
    elif ratio["min"] > 1.0 or ratio["max"] < 1.0:
        better = (ratio["min"] > 1.0) == higher_is_better
    else:
        return "tie"
    return "win" if better else "loss"


def against_floor(ratio: dict | None, floor: dict | None, higher_is_better: bool) -> str:
    """'win'/'loss' where a paired ratio's mean log differs from an A/A floor's (the same point
    run with the baseline in both arms) by Welch's two-sample t-test at 95%; 'tie' where it does
    not; '-' where either lacks two positive repetitions. The floor is the pairs' own noise: a
    ratio that ties with it is within what two identical servers differ by at that point."""
    if not ratio or not floor or any("log_sd" not in r or r["n"] < 2 for r in (ratio, floor)):
        return "-"
    var = [r["log_sd"] ** 2 / r["n"] for r in (ratio, floor)]
    shift = ratio["log_mean"] - floor["log_mean"]
    se = math.sqrt(sum(var))
    if se == 0:
        return "tie" if shift == 0 else ("win" if (shift > 0) == higher_is_better else "loss")
    df = sum(var) ** 2 / sum(v ** 2 / (r["n"] - 1) for v, r in zip(var, (ratio, floor),
                                                                   strict=True))
    t_crit = _T95[int(df) - 1] if 1 <= int(df) <= len(_T95) else (_T95[0] if df < 1 else 1.96)
    if abs(shift) <= t_crit * se:
        return "tie"
    return "win" if (shift > 0) == higher_is_better else "loss"


def paired_ratio(arm: Sequence[float | None], base: Sequence[float | None],
                 higher_is_better: bool) -> dict | None:
    """``arm[i] / base[i]`` over the repetitions where both were measured (the baseline
    nonzero): their spread, the mean and standard deviation of their logs (where every ratio
    is positive) and the verdict; None when no pair was measured."""
    ratios = [a / b for a, b in zip(arm, base, strict=True) if a is not None and b]
    if not ratios:
        return None
    out = spread(ratios)
    if min(ratios) <= 0:
        out["verdict"] = verdict(out, higher_is_better)
        return out
    logs = [math.log(r) for r in ratios]
    out["log_mean"] = sum(logs) / len(logs)
    out["log_sd"] = (math.sqrt(sum((x - out["log_mean"]) ** 2 for x in logs) / (len(logs) - 1))
                     if len(logs) > 1 else 0.0)
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
