"""Merge every JSON under benchmarks/results/ into docs/results.md's tables and plots
(:func:`benchmarks.report.write_results_md`, the one writer).

    python -m benchmarks.render            # rewrites docs/results.md between the results markers
                                           # and benchmarks/results/*.png
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from benchmarks.report import END, RESULTS, RESULTS_MD, START, write_results_md

__all__ = ["END", "START", "main"]


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
