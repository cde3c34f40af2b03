"""CPU cost of one admission plan: ``planner.plan()`` over 1000 waiting requests.

Times the pure planner alone (no engine, no vLLM) for both policies and both split modes, on a
seeded synthetic queue, and writes the numbers (microseconds, measured on the CPU) as JSON.

    python benchmarks/planner_cost.py [--candidates 1000] [--repetitions 2000] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

from benchmarks.common import git_commit
from vllm_prepack.planner import Budget, Candidate, plan

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "planner_cost_cpu.json"
CONFIGS = [(policy, split) for policy in ("ttft", "fcfs") for split in ("fill", "whole")]
NOW = 1000.0
MAX_WAIT_S = 5.0


def build_queue(n: int, seed: int, aged: int, preempted: int) -> list[Candidate]:
    """``n`` requests in queue order: ``preempted`` preempted ones at the front, then arrival
    order, the ``aged`` oldest past ``MAX_WAIT_S``. Lengths are bimodal: 80% short (16..256
    tokens), 20% long (1024..4096); 30% share one of 20 cached prefixes."""
    rng = random.Random(seed)
    queue = []
    for i in range(n):
        head = i < preempted + aged
        short = head or rng.random() < 0.8
        tokens = rng.randint(16, 256) if short else rng.randint(1024, 4096)
        group = rng.randrange(20) if rng.random() < 0.3 else None
        cached = rng.choice((16, 32, 64)) if group is not None else 0
        wait = MAX_WAIT_S + 1.0 - i / 100 if head else MAX_WAIT_S * (1 - i / n) * 0.99
        queue.append(Candidate(key=i, tokens=tokens, cached=cached, arrival=NOW - wait,
                               preempted=i < preempted, prefix=group))
    return queue


def time_plan(queue: list[Candidate], budget: Budget, policy: str, split: str,
              repetitions: int) -> dict:
    """min/median/p99/mean microseconds of ``plan()``, plus what the plan admitted."""
    result = plan(queue, budget, NOW, policy=policy, split=split, max_wait_s=MAX_WAIT_S)
    samples = []
    for _ in range(repetitions):
        start = time.perf_counter()
        plan(queue, budget, NOW, policy=policy, split=split, max_wait_s=MAX_WAIT_S)
        samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    return {
        "policy": policy,
        "split": split,
        "cpu_us_min": round(samples[0], 2),
        "cpu_us_median": round(statistics.median(samples), 2),
        "cpu_us_p99": round(samples[min(len(samples) - 1, int(0.99 * len(samples)))], 2),
        "cpu_us_mean": round(statistics.fmean(samples), 2),
        "admitted": len(result.admit),
        "admitted_aged": result.aged,
        "planned_tokens": result.tokens,
        "partial_tokens": result.partial_tokens,
    }


def time_construction(queue: list[Candidate], repetitions: int) -> float:
    """Median microseconds to build the queue's ``Candidate`` objects (the adapter's side)."""
    fields = [(c.key, c.tokens, c.cached, c.arrival, c.preempted, c.prefix) for c in queue]
    samples = []
    for _ in range(repetitions):
        start = time.perf_counter()
        [Candidate(*f) for f in fields]
        samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples)


def cpu_model() -> str | None:
    """The CPU's model name (Linux), as a complement to ``platform``'s terse answer."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name")), None)
    except OSError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--repetitions", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--aged", type=int, default=6, help="aged requests at the queue head")
    parser.add_argument("--preempted", type=int, default=2, help="preempted requests in front")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    queue = build_queue(args.candidates, args.seed, args.aged, args.preempted)
    budget = Budget(tokens=8192, slots=256, blocks=1_000_000, block_size=16, max_tokens=8192)
    build_us = time_construction(queue, args.repetitions // 10 or 1)

    runs = [time_plan(queue, budget, p, s, args.repetitions) for p, s in CONFIGS]
    report = {
        "what": "CPU cost of vllm_prepack.planner.plan() per scheduler step (microseconds, CPU)",
        "device": f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "cpu_model": cpu_model(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
        "git_commit": git_commit(),
        "command": sys.argv,
        "workload": {
            "candidates": args.candidates,
            "lengths": "bimodal: 80% 16..256 tokens, 20% 1024..4096 (head requests short)",
            "prefix_groups": "30% of requests in 20 prefix groups (cached 16/32/64 tokens)",
            "aged": args.aged,
            "preempted": args.preempted,
            "max_wait_s": MAX_WAIT_S,
            "lookahead": 1024,
            "budget": {"tokens": budget.tokens, "slots": budget.slots, "blocks": budget.blocks,
                       "block_size": budget.block_size, "max_tokens": budget.max_tokens},
        },
        "candidate_construction_cpu_us_median": round(build_us, 1),
        "seed": args.seed,
        "repetitions": args.repetitions,
        "timer": "time.perf_counter around one plan() call",
        "results": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['device']}, Python {report['python']}, {args.candidates} candidates")
    for r in runs:
        print(f"  {r['policy']:4s} {r['split']:5s}  CPU us: min {r['cpu_us_min']:8.1f}  "
              f"median {r['cpu_us_median']:8.1f}  p99 {r['cpu_us_p99']:8.1f}  "
              f"(admitted {r['admitted']}, {r['planned_tokens']} tokens)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
