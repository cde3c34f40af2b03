"""The prepacking paper's report: the markdown table (one per result JSON), the console table
and the speedup plot."""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks import report
from benchmarks.paper_bench import speedup
from benchmarks.paper_pack import METHODS


def _fmt_ms(m: dict | None, key: str = "total_ms") -> str:
    if not m:
        return "-"
    return "OOM" if m["oom"] else f"{m[key]['mean']:.1f}"


def _fmt_mem(padded: dict | None, prepacked: dict | None) -> str:
    def gib(m: dict | None) -> str | None:
        if not m or m["oom"] or m.get("peak_mem_bytes") is None:
            return None
        return f"{m['peak_mem_bytes'] / 2**30:.2f}"

    a, b = gib(padded), gib(prepacked)
    return "n/a" if a is None and b is None else f"{a or '-'}/{b or '-'}"


def table_rows(result: dict) -> list[list[str]]:
    rows = []
    for run in result["runs"]:
        for size, entry in run["by_batch_size"].items():
            m, s = entry["methods"], entry["speedups"]
            ttft = "/".join(_fmt_ms(m.get(k), "ttft_mean_ms") for k in
                            ("padded", "sorted", "prepacked"))
            rows.append([run["model_shape"], run["workload"]["name"], size,
                         _fmt_ms(m.get("padded")), _fmt_ms(m.get("sorted")),
                         _fmt_ms(m.get("prepacked")), _fmt_ms(m.get("prepacked_flat")),
                         report.fmt_ratio(s.get("prepacked_vs_padded")),
                         report.fmt_ratio(s.get("prepacked_vs_sorted")),
                         report.fmt_ratio(s.get("prepacked_flat_vs_padded")), ttft,
                         _fmt_mem(m.get("padded"), m.get("prepacked"))])
    return rows


HEADER = ["shape", "workload", "batch", "padded ms", "sorted ms", "prepacked ms", "flat ms",
          "prepacked vs padded", "prepacked vs sorted", "flat vs padded",
          "TTFT mean ms padded/sorted/prepacked", "peak mem GiB padded/prepacked"]


def render_section(results: list[dict]) -> str:
    """Markdown: one table per result JSON (ms: all batches of the dataset, mean over
    repetitions; speedups: ratio of those totals, mean [min-max] over repetitions, **win**
    where the spread excludes 1.0; flat: ``prepacked_flat``)."""
    lines: list[str] = []
    for d in results:
        lines += [f"#### Prepacking paper, HF transformers ({d['device']}, {d['dtype']}, "
                  f"transformers {d.get('transformers')}, commit {str(d['git_commit'])[:10]}, "
                  f"{d['repetitions']} reps, n={d['n']})", "",
                  "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in table_rows(d)]
        lines.append("")
    return "\n".join(lines)


def print_table(result: dict) -> None:
    rows = [HEADER, *table_rows(result)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))


def plot(result: dict, path: str | Path) -> Path:
    """PNG: speedup over ``padded`` (total time) against batch size, one line per method,
    one panel per (model, workload)."""
    plt = report.pyplot()
    runs = result["runs"]
    cols = min(3, len(runs))
    nrows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.5 * nrows), squeeze=False)
    for ax, run in zip(axes.flat, runs):
        sizes = [int(s) for s in run["by_batch_size"]]
        for method in METHODS[1:]:
            xs, ys, lo, hi = [], [], [], []
            for size in sizes:
                m = run["by_batch_size"][str(size)]["methods"]
                s = speedup(m.get("padded"), m.get(method))
                if s is None:
                    continue
                xs.append(size)
                ys.append(s["mean"])
                lo.append(s["mean"] - s["min"])
                hi.append(s["max"] - s["mean"])
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=method)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_xlabel("batch size")
        ax.set_ylabel("speedup over padded")
        ax.set_title(f"{run['model_shape']} / {run['workload']['name']}", fontsize=9)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(runs):]:
        ax.set_visible(False)
    fig.suptitle(f"prefill speedup ({result['device']}, {result['dtype']})", fontsize=10)
    fig.tight_layout()
    return report.save_figure(fig, path)
