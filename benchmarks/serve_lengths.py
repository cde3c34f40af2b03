"""Serving TTFT by prompt length: what the admission order moves between short and long prompts,
which requests cross the TTFT SLO in one arm only, and which enter the slowest 1% in one arm only.

Reads ``benchmarks.serve_ab`` trace replays (each run's per-request TTFTs, in trace order) and
their window's prompt lengths (the result's ``workload.prompt_lens``, else the trace file read
as the run read it), pools the (stock, prepack) pairs of each point over results as
:mod:`benchmarks.serve_parts` does, and writes one JSON: per prompt-length class, the paired
ratio of the class's mean TTFT; per pair, the requests that met the SLO in one arm and missed it
in the other, and those among the slowest 1% (which set the p99) in one arm only, with their
prompt lengths.

    python -m benchmarks.serve_lengths --results benchmarks/results/trace_serve_8b_b2048_*.json \\
        --trace .data/azure_conv_2023.csv --out benchmarks/results/serve_lengths_8b_h100.json
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from benchmarks import analysis, harness, report, trace
from benchmarks.serve_parts import group_pairs, point_groups

BENCHMARK = "serving TTFT by prompt length"
BOUNDS = (512, 2048)


def classes(bounds: Sequence[int]) -> list[tuple[int, int | None]]:
    """``[lo, hi)`` prompt-token ranges split at ``bounds`` (increasing, > 0)."""
    if not bounds or any(b <= 0 for b in bounds) or list(bounds) != sorted(set(bounds)):
        raise ValueError(f"bounds must be increasing positive token counts, got {list(bounds)}")
    edges = [0, *bounds]
    return [(lo, hi) for lo, hi in zip(edges, [*bounds, None], strict=True)]


def label(lo: int, hi: int | None) -> str:
    return f">= {lo}" if hi is None else (f"< {hi}" if lo == 0 else f"{lo}-{hi - 1}")


def class_of(n: int, bounds: Sequence[int] = BOUNDS) -> str:
    """The label of the length class of a prompt of ``n`` tokens."""
    return next(label(lo, hi) for lo, hi in classes(bounds) if n >= lo and (hi is None or n < hi))


def class_means(values: Sequence[float], lens: Sequence[int],
                bounds: Sequence[int] = BOUNDS) -> dict[str, float]:
    """The mean of ``values`` (one per request, in the order of ``lens``, its prompt tokens)
    per length class, in class order; a class without requests is left out."""
    if len(values) != len(lens):
        raise ValueError(f"{len(values)} values for {len(lens)} requests")
    groups: dict[str, list[float]] = {}
    for v, n in zip(values, lens):
        groups.setdefault(class_of(n, bounds), []).append(v)
    return {c: sum(groups[c]) / len(groups[c])
            for c in (label(*lh) for lh in classes(bounds)) if c in groups}


def prompt_lens(result: dict, trace_path: str | None) -> list[int]:
    """The window's prompt lengths in trace order: as the result recorded them, else read from
    the trace file as the run read it (window, clipping), checked against its totals."""
    w = result["workload"]
    if w.get("prompt_lens"):
        return list(w["prompt_lens"])
    window = trace.load(trace_path, start=w["start"], n=w["n"],
                        max_model_len=w.get("max_model_len"))
    if (Path(window.source).name, sum(window.lengths)) != (w["source"], w["total_tokens"]):
        raise ValueError(f"trace {window.source} requests {w['start']}.. is not the window the "
                         f"result ran ({w['source']}, {w['total_tokens']} prompt tokens)")
    return list(window.lengths)


def pair_ttfts(both: list[tuple[dict, dict]], lens: list[int]) -> list[tuple[list, list]]:
    """Each (stock, prepack) pair's per-request TTFTs (s), checked against the window."""
    ttfts = [(s["bench"]["ttfts_s"], p["bench"]["ttfts_s"]) for s, p in both]
    if any(len(t) != len(lens) for pair in ttfts for t in pair):
        raise ValueError(f"a run's TTFTs do not match the window's {len(lens)} requests")
    return ttfts


def class_rows(both: list[tuple[dict, dict]], lens: list[int],
               bounds: Sequence[int] = BOUNDS) -> list[dict]:
    """Per length class of the (stock, prepack) pairs ``both``: its requests, each arm's mean
    TTFT (ms, mean over pairs) and the paired ratio of the class's mean TTFT."""
    return _rows(pair_ttfts(both, lens), lens, bounds)


def _rows(ttfts: list[tuple[list, list]], lens: list[int], bounds: Sequence[int]) -> list[dict]:
    means = [[class_means([1e3 * t for t in arm], lens, bounds) for arm in pair]
             for pair in ttfts]
    counts = Counter(class_of(n, bounds) for n in lens)
    return [{"class": c, "requests": counts[c],
             "stock_ms": sum(m[0][c] for m in means) / len(means),
             "prepack_ms": sum(m[1][c] for m in means) / len(means),
             "ratio": analysis.paired_ratio([m[1][c] for m in means], [m[0][c] for m in means],
                                            False)} for c in means[0][0]]


def point(both: list[tuple[dict, dict]], lens: list[int], bounds: Sequence[int],
          slo_ms: float) -> dict:
    """One point's pairs: per length class, :func:`class_rows`; per pair, the requests under
    the SLO in one arm only and those among the slowest 1% in one arm only."""
    ttfts = pair_ttfts(both, lens)
    lost = [only_under(slo_ms / 1e3, s, p) for s, p in ttfts]
    kept = [only_under(slo_ms / 1e3, p, s) for s, p in ttfts]
    tails = [(slowest(s), slowest(p)) for s, p in ttfts]
    return {"pairs": len(both), "slo_ms": slo_ms, "classes": _rows(ttfts, lens, bounds),
            "slo_missed_by_prepack_only": analysis.spread([len(x) for x in lost]),
            "slo_missed_by_stock_only": analysis.spread([len(x) for x in kept]),
            "crossing": {"prepack_only": _counted(lost, lens), "stock_only": _counted(kept, lens)},
            "slowest_1pct": {"prepack_only": _counted([p - s for s, p in tails], lens),
                             "stock_only": _counted([s - p for s, p in tails], lens)},
            **moved_most(ttfts, lens)}


def moved_most(ttfts: list[tuple[list, list]], lens: list[int], n: int = 3) -> dict:
    """The ``n`` requests prepack delays most (``delayed_most``) and speeds up most
    (``sped_up_most``), by the mean over the pairs of prepack's TTFT minus stock's
    (``delay_ms``), with their prompt tokens and stock's mean TTFT (ms)."""
    delay = [sum(p[i] - s[i] for s, p in ttfts) * 1e3 / len(ttfts) for i in range(len(lens))]
    stock = [sum(s[i] for s, _ in ttfts) * 1e3 / len(ttfts) for i in range(len(lens))]
    return {key: [{"request": i, "prompt_tokens": lens[i], "delay_ms": delay[i],
                   "stock_ms": stock[i]}
                  for i in sorted(range(len(lens)), key=lambda i: (-sign * delay[i], i))[:n]]
            for key, sign in (("delayed_most", 1), ("sped_up_most", -1))}


def only_under(slo_s: float, met: list[float], missed: list[float]) -> list[int]:
    """The requests whose TTFT is within ``slo_s`` in ``met`` and beyond it in ``missed``."""
    return [i for i, (a, b) in enumerate(zip(met, missed, strict=True)) if a <= slo_s < b]


def slowest(ttfts: list[float]) -> set[int]:
    """The slowest 1% of the requests (at least one): the tail that sets an arm's p99 TTFT."""
    k = max(1, math.ceil(len(ttfts) / 100))
    return set(sorted(range(len(ttfts)), key=lambda i: -ttfts[i])[:k])


def _counted(sets: list, lens: list[int]) -> list[dict]:
    """Each request in any of ``sets`` (one per pair): its prompt tokens and in how many pairs."""
    return [{"request": i, "prompt_tokens": lens[i], "pairs": k}
            for i, k in sorted(Counter(j for x in sets for j in x).items())]


def points(results: list[tuple[Path, dict]], trace_path: str | None,
           bounds: Sequence[int] = BOUNDS) -> list[dict]:
    """Every point of ``results`` (pairs pooled over results of the same point)."""
    out = []
    for parts in point_groups(results):
        _, first, load = parts[0]
        both = group_pairs(parts)
        out.append({"files": [p.name for p, _, _ in parts], "device": first.get("device"),
                    "vllm": first.get("vllm"), "git_commit": first.get("git_commit"),
                    "window": first["workload"].get("description"), "load": float(load),
                    **point(both, prompt_lens(first, trace_path), bounds,
                            first["slo"]["ttft_ms"])})
    return out


def section(path: Path, d: dict) -> list[str]:
    """docs/results.md's table of one result of this benchmark."""
    labels = [label(*c) for c in classes(d["bounds"])]
    lines = ["#### Serving TTFT by prompt length", "",
             "Per prompt-length class (tokens): the class's mean TTFT, prepack over stock, over "
             "the pairs (requests in the class); SLO: requests a pair under the TTFT SLO in one "
             "arm only (mean [min-max]); slowest 1%: the requests among the slowest 1% (which "
             "set the p99) under prepack only, with their prompt tokens and in how many pairs "
             "(the three most frequent); delayed most, sped up most: the three requests with "
             "the largest mean change a pair either way, prepack's TTFT minus stock's (ms), with "
             "their prompt tokens and stock's mean TTFT. Each row's arms and options: its files' "
             "sections above.",
             "", "| files | device, commit | load | pairs | " + " | ".join(labels)
             + " | missed by prepack only | missed by stock only | slowest 1%, prepack only "
             "| delayed most | sped up most |", "|---" * (9 + len(labels)) + "|"]
    for p in d["points"]:
        by = {r["class"]: r for r in p["classes"]}
        cells = [f"{report.fmt_ratio(by[c]['ratio'])} ({by[c]['requests']})" if c in by else "-"
                 for c in labels]
        miss = [p[k] for k in ("slo_missed_by_prepack_only", "slo_missed_by_stock_only")]
        device = str(p["device"]).removeprefix("GPU: ")
        lines.append(f"| {', '.join(f'`{f}`' for f in p['files'])} | {device}, "
                     f"{str(p['git_commit'])[:10]} | {p['load']:g}x | {p['pairs']} | "
                     + " | ".join(cells) + " | "
                     + " | ".join(f"{m['mean']:.1f} [{m['min']}-{m['max']}]" for m in miss)
                     + f" | {_top(p.get('slowest_1pct', {}).get('prepack_only') or [])} | "
                     + " | ".join(_moved(p.get(k) or []) for k in ("delayed_most", "sped_up_most"))
                     + " |")
    return [*lines, "", f"`{path.name}`", ""]


def _moved(entries: list[dict]) -> str:
    """``request (tokens): +delay of stock`` (ms) for each of ``entries``."""
    return ", ".join(f"{e['request']} ({e['prompt_tokens']}): {e['delay_ms']:+.0f} of "
                     f"{e['stock_ms']:.0f}" for e in entries) or "-"


def _top(entries: list[dict], n: int = 3) -> str:
    """The ``n`` requests of ``entries`` in the most pairs: ``request (tokens): pairs``."""
    top = sorted(entries, key=lambda e: (-e["pairs"], e["request"]))[:n]
    return ", ".join(f"{e['request']} ({e['prompt_tokens']}): {e['pairs']}" for e in top) or "-"


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", nargs="+", required=True,
                   help="benchmarks.serve_ab trace replay results (JSON)")
    p.add_argument("--trace", help="the trace file of a result without recorded prompt lengths "
                   "(default: the Azure conversation trace, as benchmarks.trace finds it)")
    p.add_argument("--bounds", default=",".join(map(str, BOUNDS)),
                   help="prompt-token bounds of the length classes (comma-separated, increasing)")
    p.add_argument("--out")
    a = p.parse_args(argv)
    try:
        a.bounds = [int(b) for b in a.bounds.split(",")]
        classes(a.bounds)
    except ValueError as e:
        p.error(f"--bounds {a.bounds!r}: {e}")
    return a


def main(argv: Sequence[str] | None = None) -> dict:
    a = parse(argv)
    results = [(Path(f), json.loads(Path(f).read_text())) for f in a.results]
    if bad := [p.name for p, d in results if d.get("workload", {}).get("arrival") != "trace"]:
        raise SystemExit(f"not trace replays (workload arrival != 'trace'): {', '.join(bad)}")
    out = {"benchmark": BENCHMARK, **harness.environment(), "bounds": a.bounds,
           "points": points(results, a.trace, a.bounds)}
    for line in section(Path(a.out or "-"), out):
        print(line)
    if a.out:
        harness.write_json(a.out, out)
        print("wrote", a.out)
    return out


if __name__ == "__main__":
    main()
