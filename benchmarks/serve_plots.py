"""Plots of a serving A/B result (``benchmarks.serve_ab``): TTFT and goodput against load,
TTFT CDFs, and, for trace replays, TTFT against arrival order."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from benchmarks import report
from benchmarks.serve_pool import ARMS, arm_label, comparison


def figures(result: dict, path: str | Path) -> list[Path]:
    """Every plot of ``result``: TTFT and goodput against load at ``path``, and beside it
    ``<stem>_ttft_cdf.png`` and, for trace replays, ``<stem>_ttft_by_arrival.png``."""
    path = Path(path)
    out = [plot(result, path), plot_cdf(result, path.with_name(f"{path.stem}_ttft_cdf.png"))]
    if result.get("workload", {}).get("arrival") == "trace":
        out.append(plot_arrivals(result, path.with_name(f"{path.stem}_ttft_by_arrival.png")))
    return out


def _load_panels(result: dict, width: float):
    """A figure with one panel per load factor that has a completed run: loads, figure, axes."""
    loads = sorted({r["load_factor"] for r in result.get("runs", []) if r.get("ok")})
    fig, axes = report.pyplot().subplots(1, max(1, len(loads)),
                                         figsize=(width * max(1, len(loads)), 3), squeeze=False)
    return loads, fig, axes[0]


def plot(result: dict, path: str | Path) -> Path:
    """TTFT mean and goodput against load factor, one line per arm (bars: min-max of reps)."""
    plt = report.pyplot()
    per_load = result.get("per_load", {})
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, metric, label in ((axes[0], "mean_ttft_ms", "TTFT mean (ms)"),
                              (axes[1], "request_goodput", "goodput (req/s within SLO)")):
        for arm in ARMS:
            xs, ys, lo, hi = [], [], [], []
            for lf, agg in per_load.items():
                s = agg["per_arm"].get(arm, {}).get(metric)
                if s:
                    xs.append(float(lf))
                    ys.append(s["mean"])
                    lo.append(s["mean"] - s["min"])
                    hi.append(s["max"] - s["mean"])
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3,
                            label=arm_label(result, arm))
        ax.set_xlabel("load (x stock saturation rate)", fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    slo = (result.get("slo") or {}).get("ttft_ms")
    report.suptitle(fig, f"Serving {comparison(result)}, TTFT SLO {slo or float('nan'):.0f} ms",
                    result)
    fig.tight_layout()
    return report.save_figure(fig, path)


def plot_cdf(result: dict, path: str | Path) -> Path:
    """TTFT CDFs, one panel per load factor, one line per arm (all repetitions pooled)."""
    loads, fig, axes = _load_panels(result, 3.2)
    for ax, lf in zip(axes, loads):
        report.cdf_panel(ax, {arm_label(result, arm): [
            t for r in result["runs"] if r.get("ok") and r["arm"] == arm
            and r["load_factor"] == lf for t in r["bench"]["ttfts_s"]] for arm in ARMS},
            f"{lf:g}x saturation", log=True)
    axes[0].set_ylabel("share of requests")
    axes[-1].legend(fontsize=7)
    report.suptitle(fig, "Serving TTFT CDF", result)
    if result.get("workload", {}).get("arrival") == "trace":
        fig.text(0.01, 0.01, report.TRACE_CREDIT, fontsize=6)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return report.save_figure(fig, path)


def moving_mean(values: Sequence[float], window: int) -> list[float]:
    """The mean of each ``window`` consecutive values (``len(values) - window + 1`` of them)."""
    total = sum(values[:window])
    out = [total / window]
    for i in range(window, len(values)):
        total += values[i] - values[i - window]
        out.append(total / window)
    return out


def plot_arrivals(result: dict, path: str | Path, window: int = 10) -> Path:
    """Trace replays: TTFT against arrival order, one panel per load factor, one line per run
    (a moving mean over ``window`` requests): where the queues form, and in which runs."""
    loads, fig, axes = _load_panels(result, 4)
    colors = dict(zip(ARMS, ("tab:blue", "tab:orange"), strict=True))
    for ax, lf in zip(axes, loads):
        for r in result["runs"]:
            ttft = r["bench"]["ttfts_s"] if r.get("ok") and r["load_factor"] == lf else []
            if len(ttft) < window:
                continue
            ax.plot(range(window, len(ttft) + 1), moving_mean(ttft, window),
                    color=colors[r["arm"]], alpha=0.7, linewidth=1,
                    label=f"{arm_label(result, r['arm'])} rep {r['rep']}")
        ax.set_yscale("log")
        ax.set_title(f"{lf:g}x saturation", fontsize=9)
        ax.set_xlabel("request, in arrival order", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0].set_ylabel(f"TTFT (s), mean of {window} requests", fontsize=8)
    report.suptitle(fig, "Serving TTFT by arrival", result)
    fig.text(0.01, 0.01, report.TRACE_CREDIT, fontsize=6)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return report.save_figure(fig, path)
