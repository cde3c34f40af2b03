"""Serving A/B traces: TimedTrace JSONL entries with exact prompt and output lengths, Poisson
(or recorded) arrivals and hash ids that never repeat across traces."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path

CHUNK = 16  # --timed-trace-chunk-hash-size: tokens per hash id


def output_lengths(spec: str, n: int, seed: int) -> list[int]:
    """``"64"``: all 64; ``"16:64"``: seeded uniform integers in [16, 64]."""
    lo, _, hi = spec.partition(":")
    low, high = int(lo), int(hi or lo)
    if not 1 <= low <= high:
        raise ValueError(f"--output-len must be N or LO:HI with 1 <= LO <= HI, got {spec!r}")
    rng = random.Random(f"output/{seed}")
    return [low if low == high else rng.randint(low, high) for _ in range(n)]


def make_trace(lengths: Sequence[int], output_lens: Sequence[int], rate: float | None,
               seed: int | str, hash_start: int = 0, chunk: int = CHUNK,
               unit_arrivals: Sequence[float] | None = None) -> list[dict]:
    """One TimedTrace entry per request, in arrival order.

    ``rate`` (requests/s) gives Poisson arrivals (unit-rate gaps seeded by ``seed``, scaled by
    1/rate: the same seed at another rate is the same process, stretched); ``None`` or
    ``inf`` sends everything at t=0. ``unit_arrivals`` (offsets at a mean rate of 1 req/s,
    e.g. a recorded trace's) replace the Poisson process: scaled by 1/rate the same way.
    Request ``i`` gets ``ceil(lengths[i] / chunk)`` hash ids of its own, numbered from
    ``hash_start``: TimedTrace expands each into ``chunk`` tokens (the last one cut to what
    is left), so exactly ``lengths[i]`` prompt tokens.
    """
    if len(lengths) != len(output_lens):
        raise ValueError("one output length per prompt length")
    if unit_arrivals is not None and len(unit_arrivals) != len(lengths):
        raise ValueError("one arrival per prompt length")
    rng = random.Random(f"arrivals/{seed}")
    t, next_hash, entries = 0.0, hash_start, []
    for i, (length, out) in enumerate(zip(lengths, output_lens)):
        if length < 1 or out < 1:
            raise ValueError(f"lengths must be >= 1, got input {length}, output {out}")
        if rate is not None and math.isfinite(rate):
            t = unit_arrivals[i] if unit_arrivals is not None else t + rng.expovariate(1.0)
        count = -(-length // chunk)
        entries.append({
            "timestamp": round(t / rate, 6) if rate is not None and math.isfinite(rate) else 0.0,
            "input_length": int(length), "output_length": int(out),
            "hash_ids": list(range(next_hash, next_hash + count)),
        })
        next_hash += count
    return entries


def write_trace(path: str | Path, entries: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path


class TraceBook:
    """Writes traces into ``dir``; hash ids never repeat across traces."""

    def __init__(self, dir: Path, lengths: Sequence[int], output_lens: Sequence[int],
                 unit_arrivals: Sequence[float] | None = None):
        self.dir, self.lengths, self.output_lens = dir, list(lengths), list(output_lens)
        self.unit_arrivals = list(unit_arrivals) if unit_arrivals is not None else None
        self.next_hash = 0
        self.cache: dict[str, tuple[Path, list[dict]]] = {}

    def get(self, name: str, rate: float | None, seed: int | str) -> tuple[Path, list[dict]]:
        if name not in self.cache:
            entries = make_trace(self.lengths, self.output_lens, rate, seed, self.next_hash,
                                 unit_arrivals=self.unit_arrivals)
            self.next_hash = entries[-1]["hash_ids"][-1] + 1
            self.cache[name] = (write_trace(self.dir / f"{name}.jsonl", entries), entries)
        return self.cache[name]
