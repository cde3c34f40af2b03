"""Merge every JSON under benchmarks/results/ into docs/results.md's tables and plots: the one
writer of that document, its sections keyed by each result JSON's ``benchmark`` field
(``benchmarks/report_sections.py``).

    python -m benchmarks.render            # rewrites docs/results.md between the results markers
                                           # and benchmarks/results/*.png
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RESULTS_MD = ROOT / "docs" / "results.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
OFFLINE = ("offline A/B", "offline A/B, prefill only", "offline A/B, trace replay")


def sections() -> dict[str, tuple[Callable, Callable | None, int]]:
    """Benchmark kind (a result JSON's ``benchmark`` field) -> its section function
    ``(path, result) -> lines``, its figure function ``(path, result, out_dir) -> names`` (or
    None) and the place of its sections in the document. Kinds not listed (planner cost, step
    timings, the simulator's host fit) are cited from the prose, not tabled."""
    from benchmarks import (
        calib_report,
        paper,
        serve_ab,
        serve_lengths,
        sim_report,
        trace_calib,
        trace_sim,
    )
    from benchmarks import report_sections as s

    return {
        "greedy equivalence": (s.equivalence_table, None, 0),
        "FA3 varlen: packed contiguous K/V vs paged K/V, causal prefill":
            (s.kernel_table, None, 1),
        OFFLINE[0]: (s.ab_tables, s.offline_figures, 2),
        OFFLINE[1]: (s.ab_tables, s.offline_figures, 2),
        OFFLINE[2]: (s.trace_table, s.offline_figures, 2),
        serve_ab.BENCHMARK: (s.serving_section, s.serving_figures, 3),
        serve_lengths.BENCHMARK: (serve_lengths.section, None, 4),
        trace_calib.BENCHMARK: (calib_report.calibration_table, None, 4),
        trace_sim.BENCHMARK: (sim_report.section, sim_report.figures, 4),
        paper.BENCHMARK: (s.paper_section, s.paper_figures, 5),
    }


def render(plots_dir: Path = RESULTS, images_at: str = "benchmarks/results",
           results_dir: Path = RESULTS) -> str:
    """The markdown between the results markers: every section (after the last serving section,
    the serving points measured in parts, their A/A floors and the time outside the engine),
    then every figure (offline A/B figures first, then the others in file order)."""
    from benchmarks import serve_ab, serve_floor, serve_parts

    table = sections()
    results = [(path, json.loads(path.read_text()))
               for path in sorted(results_dir.glob("*.json"))]
    known = [(p, d) for p, d in results if isinstance(d, dict) and d.get("benchmark") in table]
    serving = [(p, d) for p, d in known if d["benchmark"] == serve_ab.BENCHMARK]
    lines: list[str] = []
    for path, d in sorted(known, key=lambda pd: table[pd[1]["benchmark"]][2]):
        lines += table[d["benchmark"]][0](path, d)
        if serving and d is serving[-1][1]:  # the sort is stable: the last serving section
            lines += (serve_parts.section(serving) + serve_floor.section(serving)
                      + serve_parts.host_section(serving))
    images: list[str] = []
    for path, d in sorted(known, key=lambda pd: pd[1]["benchmark"] not in OFFLINE):
        figures = table[d["benchmark"]][1]
        if figures is not None:
            images += figures(path, d, plots_dir)
    lines += [f"![{image}]({images_at}/{image})" for image in images]
    lines.append("")
    return "\n".join(lines)


def image_dir(markdown: Path) -> str:
    """``benchmarks/results`` as a link from ``markdown``'s folder."""
    return os.path.relpath(RESULTS, markdown.resolve().parent).replace(os.sep, "/")


def write_results_md(markdown: Path = RESULTS_MD, plots_dir: Path = RESULTS) -> Path:
    """Rewrite the part of ``markdown`` between the results markers (and the figures in
    ``plots_dir``). Everything before the start marker and after the end marker is kept as
    written: the prose."""
    text = markdown.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{markdown} has no {START} ... {END} section")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    body = render(plots_dir, image_dir(markdown))
    markdown.write_text(head + START + "\n" + body + END + tail)
    return markdown


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", default=str(RESULTS_MD),
                        help="the Markdown file whose results markers are rewritten")
    parser.add_argument("--plots-dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    print("rendered", write_results_md(Path(args.readme), Path(args.plots_dir)))


if __name__ == "__main__":
    main()
