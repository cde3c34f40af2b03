"""docs/results.md's section for a trace simulation (``benchmarks.trace_sim``): a table of
each arm's ratios to stock per budget and load, and a figure of mean against p99 TTFT ratio
per point, one marker per arm, so the trade-off between the two is seen at a glance."""

from __future__ import annotations

from pathlib import Path

from benchmarks import report, trace_sim

DEFAULT_ARM = "stretch"
"""The arm that runs the plugin's defaults (``benchmarks.trace_sim_options.ARMS``)."""

METRICS = tuple(trace_sim.METRICS)


def cell(r: dict | None) -> str:
    """``median [min-max]`` of a ratio spread over the simulated windows."""
    if not r:
        return "-"
    return f"{r['median']:.2f} [{r['min']:.2f}-{r['max']:.2f}]"


def arm_label(arm: str, options: dict | None, policy: dict | None = None) -> str:
    """An arm and what it ran: the options it set, and the policy they resolved to where the
    result records it (``policies``), else "defaults of its commit" for no options."""
    if options is None:
        return f"{arm} (vLLM)"
    shown = policy or options
    if not shown:
        return f"{arm} (defaults of its commit)"
    return f"{arm} (" + ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                                  for k, v in shown.items()) + ")"


def runs(d: dict) -> str:
    """``3 windows``, ``1 window, 3 runs`` where a window was simulated again, and the runs
    per window with step-time noise."""
    seeds, replicas = d["seeds"], d.get("replicas", 1)
    n = len(set(seeds))
    text = f"{n} window" + ("s" if n != 1 else "")
    text = text if n == len(seeds) else f"{text}, {len(seeds)} runs"
    noise = d.get("step_noise") or 0.0
    if replicas > 1 or noise:
        text += f", {replicas} run(s) each with step-time noise (log-sigma {noise:g})"
    return text


def section(path: Path, d: dict) -> list[str]:
    """Per point and arm: TTFT and throughput ratios to stock, median [min-max] over seeds."""
    seeds = d["seeds"]
    lines = [f"#### Trace simulation, {d['shape']}, {d['max_num_seqs']} sequences (CPU, "
             f"vLLM {d['vllm']}, commit {str(d['git_commit'])[:10]}, {runs(d)}, "
             f"`{path.name}`)", "",
             f"{d['workload']['n']} requests per window from row {d['workload']['start']} "
             f"(seeds {', '.join(map(str, seeds))}); loads are multiples of stock's simulated "
             f"saturation.{kv_words(d)} Data: {d['workload']['trace']}.", "",
             "| budget | load | stock TTFT / held mean s | arm | TTFT mean | TTFT p50 "
             "| TTFT p99 | throughput | preemptions, arm / stock |", "|---" * 9 + "|"]
    for pt in d["points"]:
        where = f"| {pt['budget']} | {pt['load']:.2f}x | {stock_split(pt)}"
        for arm, r in pt["ratios"].items():
            label = arm_label(arm, d["arms"].get(arm), d.get("policies", {}).get(arm))
            lines.append(f"{where} | {label} | "
                         + " | ".join(cell(r.get(m)) for m in METRICS)
                         + f" | {preemptions(pt, arm)} / {preemptions(pt, 'stock')} |")
            where = "| | |"
    return lines + ["", "Ratios: arm over stock on the same windows. Held: from the first step "
                    "that could schedule a request to the step that did, the part of its TTFT "
                    "that an admission order can shorten.", ""] + delays_table(d)


def delays_table(d: dict) -> list[str]:
    """Where ``--delays`` recorded them: per point and arm, the requests the arm delays and
    those it speeds up (a window's mean), their summed TTFT difference split into hold, span
    and lag (:mod:`benchmarks.trace_sim_delays`), and the first window's most delayed request."""
    points = [pt for pt in d["points"] if pt.get("delays")]
    if not points:
        return []
    lines = ["Where the differences come from (`--delays`; a window's mean; s: summed over the "
             "requests): hold is the wait before a request's first step, span its prefill "
             "from there, lag async scheduling's step in flight. The delay's hold by what its "
             "steps left: no budget, no slot, too few KV blocks, or room on all three "
             "(`trace_sim_delays.REASONS`).", "",
             "| budget | load | arm | delayed | delay s: hold / span / lag | delay's hold s: "
             "budget / slots / KV / room | preempted, arm only | sped up | gain s: hold / span / "
             "lag | most delayed, first window |",
             "|---" * 10 + "|"]
    for pt in points:
        for arm, windows in pt["delays"].items():
            top = windows[0]["most_delayed"][:1]
            worst = "-" if not top else (
                f"{top[0]['request']} ({top[0]['prompt_tokens']} tokens): "
                f"{top[0]['delta_ms']:+.0f} ms on {top[0]['stock_ms']:.0f} (hold "
                f"{top[0]['hold_ms']:+.0f}, span {top[0]['span_ms']:+.0f}), passed by "
                f"{top[0]['passed_by'][1]}")
            lines.append(f"| {pt['budget']} | {pt['load']:.2f}x | {arm} | "
                         f"{_split(windows, 'delayed')} | {_split(windows, 'sped')} | {worst} |")
    return lines + [""]


def _split(windows: list[dict], side: str) -> str:
    """Requests, and their summed difference with its parts, a window's mean; then (delayed
    only) the hold's part by reason and the requests preempted before their first token in the
    arm only."""
    mean = lambda k: sum(w[side][k] for w in windows) / len(windows)  # noqa: E731
    parts = " / ".join(f"{mean(k):+.2f}" for k in ("hold_s", "span_s", "lag_s"))
    cells = [f"{mean('requests'):.0f}", f"{mean('ttft_s'):+.2f}: {parts}"]
    if side == "delayed":
        why = [w[side].get("hold_by_reason_s") for w in windows]
        cells.append("-" if not all(why) else " / ".join(
            f"{sum(x[k] for x in why) / len(why):+.2f}" for k in ("budget", "slots", "kv", "room")))
        cells.append(f"{mean('preempted_here_only'):.1f}")
    return " | ".join(cells)


def kv_words(d: dict) -> str:
    return f" KV cache: {d['num_blocks']:,} blocks of 16 tokens." if "num_blocks" in d else ""


def preemptions(pt: dict, arm: str) -> str:
    """An arm's preemptions over the windows (``-`` where not recorded)."""
    runs = pt.get("per_arm", {}).get(arm) or []
    if not runs or any("preemptions" not in r for r in runs):
        return "-"
    return str(sum(r["preemptions"] for r in runs))


def stock_split(pt: dict) -> str:
    """Stock's mean TTFT and mean held time over the windows (``-`` where not recorded)."""
    runs = pt.get("per_arm", {}).get("stock") or []
    if not runs:
        return "-"
    mean = lambda k: sum(r[k] for r in runs) / len(runs)  # noqa: E731
    held = f"{mean('held_mean_s'):.3f}" if all("held_mean_s" in r for r in runs) else "-"
    return f"{mean('ttft_mean_s'):.3f} / {held}"


def figures(path: Path, d: dict, out_dir: Path) -> list[str]:
    """One figure per result: a panel per (budget, load), mean vs p99 TTFT ratio per arm."""
    points = [pt for pt in d["points"] if len(pt["ratios"]) > 1]
    if not points:
        return []
    plt = report.pyplot()
    cols = min(len(points), 4)
    rows = -(-len(points) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.3 * rows), squeeze=False)
    for ax, pt in zip(axes.flat, points):
        spots: dict[tuple[float, float], list[str]] = {}  # arms that coincide share a label
        for arm, r in pt["ratios"].items():
            x, y = r["ttft_mean_s"]["median"], r["ttft_p99_s"]["median"]
            spots.setdefault((round(x, 2), round(y, 2)), []).append(arm)
        for (x, y), arms in spots.items():
            default = DEFAULT_ARM in arms
            ax.scatter([x], [y], s=40 if default else 14, zorder=3,
                       color="tab:red" if default else "tab:blue")
            label = ", ".join(arms) if len(arms) < 3 else f"{arms[0]} +{len(arms) - 1}"
            ax.annotate(label, (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points",
                        annotation_clip=True, clip_on=True)
        xs, ys = [x for x, _ in spots] + [1.0], [y for _, y in spots] + [1.0]
        ax.set_xlim(min(min(xs) - 0.05, 0.9), max(max(xs) + 0.05, 1.1))
        ax.set_ylim(min(min(ys) - 0.05, 0.9), max(max(ys) + 0.05, 1.1))
        ax.axhline(1.0, color="grey", lw=0.6)
        ax.axvline(1.0, color="grey", lw=0.6)
        ax.set_title(f"budget {pt['budget']}, {pt['load']:g}x saturation", fontsize=9)
        ax.set_xlabel("TTFT mean vs stock", fontsize=8)
        ax.set_ylabel("TTFT p99 vs stock", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(points):]:
        ax.axis("off")
    fig.suptitle(f"Trace simulation, {d['shape']}: median over {runs(d)} "
                 f"(red: defaults)", fontsize=10)
    fig.text(0.01, 0.005, report.TRACE_CREDIT, fontsize=6)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    name = path.stem + "_frontier.png"
    report.save_figure(fig, Path(out_dir) / name)
    return [name]
