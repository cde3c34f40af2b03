"""Writing results for people: ratio cells and figures (``benchmarks.render`` writes
docs/results.md from them)."""

from __future__ import annotations

from pathlib import Path

TRACE_CREDIT = "Data: Azure LLM inference trace 2023 (conversation), CC-BY 4.0"
"""The trace's attribution as a figure footnote."""


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def model_name(result: dict) -> str:
    """A result's model as figures name it: its shape, else its path's last part."""
    return result.get("model_shape") or Path(result.get("model") or "?").name


def suptitle(fig, what: str, result: dict, detail: str = "") -> None:
    """A figure's title: what it shows, the result's model (and ``detail``), then the device,
    wrapped to the figure's width (about 13 characters an inch at 9 points)."""
    import textwrap

    width = max(20, int(fig.get_figwidth() * 13))
    lines = [f"{what}: {model_name(result)}{', ' + detail if detail else ''}",
             f"({result['device']})"]
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in lines), fontsize=9)


def cdf_panel(ax, samples: dict[str, list[float]], title: str, log: bool = False) -> None:
    """One panel of TTFT CDFs: a line per label (empty samples skipped); ``log``: a log TTFT
    axis labelled at 1 and 3 of each decade in plain numbers (minor labels overlap on a narrow
    panel)."""
    for label, values in samples.items():
        if values:
            values = sorted(values)
            ax.plot(values, [i / len(values) for i in range(1, len(values) + 1)], label=label)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("TTFT (s)", fontsize=8)
    ax.grid(alpha=0.3)
    if log:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 3.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())


def save_figure(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as a PNG (parent folders made) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fmt_ratio(r: dict | None) -> str:
    """``mean [min-max]`` of a ratio spread, with its verdict in bold when it is one."""
    if not r:
        return "-"
    marks = {"win": " **win**", "loss": " **loss**", "tie": ""}
    mark = marks.get(r["verdict"], f" ({r['verdict']})")
    return f"{r['mean']:.2f} [{r['min']:.2f}-{r['max']:.2f}]{mark}"


def host_words(result: dict) -> str:
    """One sentence on the host CPU a run saw (:func:`benchmarks.harness.host`), or ""."""
    h = result.get("host")
    if not h:
        return ""
    quota = f", cgroup quota {h['cgroup_cpus']:g} CPUs" if h.get("cgroup_cpus") else ""
    return (f" Host CPU: {h.get('cpu_model')}, {h.get('usable_cpus')} usable{quota}, load "
            f"{h.get('load_1m')} at start, one-core probe {h.get('probe_ms')} ms.")
