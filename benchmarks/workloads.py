"""Prompt-length mixes for the benchmarks (no dataset can be downloaded here).

Synthetic lengths calibrated to the datasets of the prepacking paper, plus a ShareGPT-like
long tail and the lognormal mix of the GPU reference numbers. Seeded; every mix prints its
padding ratio (``max_len * n / sum(lengths)``: what padded batching of the whole set costs).

    python -m benchmarks.workloads            # table of every mix at n=512
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable
from dataclasses import dataclass


def _lognormal(median: float, sigma: float, lo: int, hi: int) -> Callable[[random.Random], int]:
    def draw(rng: random.Random) -> int:
        return max(lo, min(hi, int(round(rng.lognormvariate(math.log(median), sigma)))))
    return draw


def _capped(median: float, sigma: float, cap: int, spike: float) -> Callable[[random.Random], int]:
    """Wikitext-style: lines cut at ``cap`` tokens, so a spike at the cap."""
    body = _lognormal(median, sigma, 4, cap)

    def draw(rng: random.Random) -> int:
        return cap if rng.random() < spike else body(rng)
    return draw


MIXES: dict[str, tuple[str, Callable[[random.Random], int]]] = {
    "mmlu": ("MMLU questions: short, heavy tail", _lognormal(70, 0.75, 8, 1024)),
    "wikitext256": ("Wikitext capped at 256: bimodal, spike at the cap",
                    _capped(90, 0.9, 256, 0.4)),
    "wikitext512": ("Wikitext capped at 512: bimodal, spike at the cap",
                    _capped(120, 1.0, 512, 0.35)),
    "samsum": ("SamSum dialogues: ~100-500", _lognormal(200, 0.4, 100, 600)),
    "alpaca": ("Alpaca instructions: ~120-1k", _lognormal(250, 0.6, 120, 1024)),
    "hh_rlhf": ("hh-rlhf: ~230 with a tail past 1k", _lognormal(230, 0.8, 20, 2048)),
    "sharegpt": ("ShareGPT-like long tail to 8k", _lognormal(600, 1.1, 4, 8192)),
    "lognormal": ("GPU reference mix: lognormal, ~390 mean", _lognormal(256, 0.9, 8, 4096)),
}


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    seed: int
    lengths: tuple[int, ...]
    arrivals: tuple[float, ...]  # seconds after the start; all 0.0 for offline

    @property
    def total_tokens(self) -> int:
        return sum(self.lengths)

    @property
    def padding_ratio(self) -> float:
        return max(self.lengths) * len(self.lengths) / self.total_tokens

    def prompts(self, vocab: int, rep: int = 0) -> list[list[int]]:
        """Random token ids; a fresh set for each repetition (no prefix-cache reuse)."""
        rng = random.Random(f"{self.name}/{self.seed}/{rep}")  # str seeds are stable
        return [[rng.randrange(10, vocab - 10) for _ in range(n)] for n in self.lengths]

    def describe(self) -> dict:
        return {"name": self.name, "description": self.description, "seed": self.seed,
                "n": len(self.lengths), "total_tokens": self.total_tokens,
                "mean_len": self.total_tokens / len(self.lengths), "max_len": max(self.lengths),
                "padding_ratio": round(self.padding_ratio, 3),
                "arrival": "offline" if not any(self.arrivals) else "poisson",
                "duration_s": max(self.arrivals) if self.arrivals else 0.0}


def make(name: str, n: int, seed: int = 0, *, max_len: int | None = None,
         rate: float | None = None) -> Workload:
    """``n`` prompts of mix ``name``; ``rate`` (req/s) gives Poisson arrivals, else offline."""
    if name not in MIXES:
        raise ValueError(f"unknown workload {name!r}; accepted: {', '.join(MIXES)}")
    description, draw = MIXES[name]
    rng = random.Random(seed)
    lengths = [draw(rng) for _ in range(n)]
    if max_len is not None:
        lengths = [min(x, max_len) for x in lengths]
    arrivals = [0.0] * n
    if rate:
        t = 0.0
        for i in range(n):
            t += rng.expovariate(rate)
            arrivals[i] = t
    return Workload(name, description, seed, tuple(lengths), tuple(arrivals))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{'mix':<12} {'n':>5} {'tokens':>8} {'mean':>6} {'max':>5} {'padding':>8}  description")
    for name in MIXES:
        w = make(name, args.n, args.seed)
        d = w.describe()
        print(f"{name:<12} {d['n']:>5} {d['total_tokens']:>8} {d['mean_len']:>6.0f} "
              f"{d['max_len']:>5} {d['padding_ratio']:>7.2f}x  {d['description']}")
