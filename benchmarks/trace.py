"""Arrival traces in the Azure LLM inference format (``TIMESTAMP,ContextTokens,GeneratedTokens``)
as benchmark workloads: a window of requests at their trace times, compressed.

A window is ``n`` consecutive requests from row ``start`` (file order, which is arrival
order). Arrivals are offsets from the window's first request, divided by the compression
factor (``rate`` picks the factor that gives that mean arrival rate: ``(n - 1) / span``).
Prompt lengths are ``ContextTokens`` clipped to ``max_model_len - output`` (the number
clipped is reported), output lengths ``GeneratedTokens`` (at least 1). Prompts are fresh
random token ids per repetition (seeded), so a prefix cache never hits across repetitions.

Data: the conversation trace of the Azure LLM inference trace 2023 (Azure Public Dataset,
CC-BY 4.0; Patel et al., "Splitwise: Efficient generative LLM inference using phase
splitting", ISCA 2024). Keep that attribution with anything derived from it.

    python -m benchmarks.trace --start 0 --n 500 --compression 4
"""

from __future__ import annotations

import argparse
import csv
import os
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from benchmarks import workloads

ROOT = Path(__file__).resolve().parents[1]
FILE = "azure_conv_2023.csv"
ATTRIBUTION = ("Azure LLM inference trace 2023, conversation service (Azure Public Dataset, "
               "CC-BY 4.0); Patel et al., \"Splitwise: Efficient generative LLM inference "
               "using phase splitting\", ISCA 2024")
# Where the trace is looked for when no path is given: $PREPACK_TRACE, the shared data
# beside the checkout, or a copy inside it (an ignored folder that travels to a GPU machine).
CANDIDATES = (ROOT.parent / "shared" / "data" / FILE, ROOT / "shared" / "data" / FILE,
              ROOT / ".data" / FILE)


def default_path() -> Path:
    if os.environ.get("PREPACK_TRACE"):
        return Path(os.environ["PREPACK_TRACE"])
    for path in CANDIDATES:
        if path.exists():
            return path
    raise FileNotFoundError(f"no {FILE}: give a path, set PREPACK_TRACE, or copy it to one of "
                            + ", ".join(map(str, CANDIDATES)))


def _seconds(stamp: str) -> float:
    """``2023-11-16 18:15:46.6805900`` (7 fractional digits) or a number of seconds."""
    try:
        return float(stamp)
    except ValueError:
        pass
    head, _, frac = stamp.strip().partition(".")
    base = datetime.strptime(head, "%Y-%m-%d %H:%M:%S").timestamp()
    return base + (float("0." + frac) if frac else 0.0)


@lru_cache(maxsize=4)
def read(path: str) -> tuple[tuple[float, int, int], ...]:
    """Every row of an Azure-format CSV: (seconds, prompt tokens, output tokens)."""
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.append((_seconds(row["TIMESTAMP"]), int(row["ContextTokens"]),
                         int(row["GeneratedTokens"])))
    if not rows:
        raise ValueError(f"{path}: no rows")
    return tuple(rows)


@dataclass(frozen=True)
class TraceWorkload(workloads.Workload):
    """A trace window as a :class:`benchmarks.workloads.Workload` (lengths, arrivals, fresh
    prompts per repetition) with per-request output lengths."""

    output_lens: tuple[int, ...] = ()
    source: str = ""
    start: int = 0
    compression: float = 1.0
    raw_arrivals: tuple[float, ...] = ()  # offsets in the trace, before compression
    raw_span_s: float = 0.0
    clipped: int = 0  # prompts cut to max_model_len - output
    max_model_len: int | None = None

    @property
    def span_s(self) -> float:
        return self.raw_span_s / self.compression

    @property
    def rate(self) -> float:
        """Mean arrival rate (requests/s) of the compressed window."""
        return (len(self.lengths) - 1) / self.span_s if self.span_s > 0 else float("inf")

    @property
    def output_tokens(self) -> int:
        return sum(self.output_lens)

    def compressed(self, compression: float, name: str | None = None) -> TraceWorkload:
        """The same window with another compression factor (``inf``: all at t=0)."""
        if not compression > 0:
            raise ValueError(f"compression must be > 0, got {compression}")
        return replace(self, name=name or self.name, compression=compression,
                       arrivals=tuple(a / compression for a in self.raw_arrivals))

    def at_rate(self, rate: float, name: str | None = None) -> TraceWorkload:
        """The same window compressed to a mean arrival rate of ``rate`` requests/s."""
        if not rate > 0:
            raise ValueError(f"rate must be > 0 requests/s, got {rate}")
        raw_rate = (len(self.lengths) - 1) / self.raw_span_s if self.raw_span_s else rate
        return self.compressed(rate / raw_rate, name)

    def describe(self) -> dict:
        n = len(self.lengths)
        return {**super().describe(), "arrival": "trace", "source": Path(self.source).name,
                "attribution": ATTRIBUTION, "start": self.start,
                "compression": self.compression, "rate_req_per_s": self.rate,
                "raw_span_s": self.raw_span_s, "duration_s": self.span_s,
                "output_tokens_total": self.output_tokens,
                "mean_output_len": self.output_tokens / n, "max_output_len": max(self.output_lens),
                "clipped_prompts": self.clipped, "max_model_len": self.max_model_len}


def load(path: str | Path | None = None, *, start: int = 0, n: int | None = None,
         compression: float | None = None, rate: float | None = None,
         max_model_len: int | None = None, seed: int = 0, name: str | None = None
         ) -> TraceWorkload:
    """Requests ``start .. start + n - 1`` of the trace at ``path`` (default: the Azure
    conversation trace), arrivals relative to the first and divided by ``compression``, or
    compressed to mean ``rate`` requests/s (at most one of the two; neither: real time)."""
    if compression is not None and rate is not None:
        raise ValueError("give compression or rate, not both")
    path = Path(path) if path is not None else default_path()
    rows = read(str(path.resolve()))
    if not 0 <= start < len(rows):
        raise ValueError(f"start {start} outside the trace's {len(rows)} requests")
    window = rows[start:start + n] if n is not None else rows[start:]
    if n is not None and len(window) < n:
        raise ValueError(f"the trace has {len(rows) - start} requests from {start}, asked {n}")
    if len(window) < 1:
        raise ValueError("empty window")
    t0 = window[0][0]
    offsets = [t - t0 for t, _, _ in window]
    if any(b < a for a, b in zip(offsets, offsets[1:])):
        raise ValueError(f"{path}: timestamps are not in arrival order")
    outs = [max(1, o) for _, _, o in window]
    lengths, clipped = [], 0
    for (_, p, _), o in zip(window, outs):
        p = max(1, p)
        if max_model_len is not None:
            cap = max_model_len - o
            if cap < 1:
                raise ValueError(f"output length {o} leaves no room in max_model_len "
                                 f"{max_model_len}")
            if p > cap:
                p, clipped = cap, clipped + 1
        lengths.append(p)
    trace = TraceWorkload(
        name=name or f"{path.stem}@{start}+{len(window)}", seed=seed,
        description=f"{path.name} requests {start}..{start + len(window) - 1}",
        lengths=tuple(lengths), arrivals=tuple(offsets),
        raw_arrivals=tuple(offsets), output_lens=tuple(outs), source=str(path), start=start,
        compression=1.0, raw_span_s=offsets[-1], clipped=clipped, max_model_len=max_model_len)
    if rate is not None:
        return trace.at_rate(rate)
    if compression is not None:
        return trace.compressed(compression)
    return trace


load_trace = load


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", default=None)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--compression", type=float, default=None)
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--max-model-len", type=int, default=None)
    a = parser.parse_args()
    w = load(a.path, start=a.start, n=a.n, compression=a.compression, rate=a.rate,
             max_model_len=a.max_model_len)
    for k, v in w.describe().items():
        print(f"{k:>20}: {v}")
