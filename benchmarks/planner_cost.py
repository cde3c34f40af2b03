"""Per-step CPU cost of the prepack scheduler against vLLM's, at several waiting-queue sizes.

vLLM's real ``Scheduler`` and ours, no model: ``running`` requests decode, ``waiting`` requests
of trace-like lengths wait, prefix caching on. Each step is ``schedule()`` +
``update_from_output()`` (one sampled token each); the cost of a step is its CPU time
(``time.thread_time``). Two kinds of step:

- decode-only (default): every slot is taken, so no step admits anything;
- ``--admitting``: slots are free, so every step plans (the prepack planner walks the head of
  its order) and admits prompts into the token budget; each admitted prompt finishes on its
  first token and as many new requests arrive before the next step (``add_request``, where
  the prepack queue builds a request's candidate, timed apart), so the queue stays at size.

The prepack overhead is our step minus stock's at the same queue size; it must not grow with the
queue (nothing per step walks the waiting requests or their block hashes).

    python -m benchmarks.planner_cost --waiting 0,300,1000 --running 128 \\
        --out benchmarks/results/planner_cost_cpu.json
    python -m benchmarks.planner_cost --waiting 0,300,1000 --running 128 --admitting \\
        --out benchmarks/results/planner_cost_admitting_cpu.json
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import tempfile
import time
from dataclasses import dataclass

from vllm.v1.core.sched.scheduler import Scheduler

from benchmarks import harness
from tests.harness.sched import make_request, make_scheduler, runner_output
from vllm_prepack.adapters.scheduler import PrepackSyncScheduler

ARMS = {"stock": (Scheduler, False), "prepack": (PrepackSyncScheduler, False),
        "prepack-stats": (PrepackSyncScheduler, True)}
"""name: (scheduler class, with a statistics file (``--prepack-stats-path``))."""
FREE_SLOTS = 256
"""Slots beyond the running requests when admitting: no admitting step is slot-bound."""


def _start_decoding(scheduler, prompts: list[list[int]], now: float) -> None:
    """Admit ``prompts`` and step until each has its prompt computed: they decode from then on."""
    for i, tokens in enumerate(prompts):
        scheduler.add_request(make_request(tokens, max_tokens=10_000, arrival=now,
                                           req_id=f"run{i}"))
    while len(scheduler.running) < len(prompts) or any(
            r.num_computed_tokens < r.num_prompt_tokens for r in scheduler.running):
        out = scheduler.schedule()
        scheduler.update_from_output(out, runner_output(scheduler, out))


def step_costs(cls, model: str, running: int, waiting: int, steps: int, seed: int,
               stats_path: str | None = None, admitting: bool = False) -> dict:
    """Over ``steps`` steps: ``costs`` (CPU microseconds of each step, the stepping thread's),
    ``own`` (the prepack scheduler's own work in each), ``process`` (the process's CPU
    microseconds per step, every thread: the statistics file's writer included, until the file
    holds every step; the arrivals' ``add_request`` calls too, not the building of their
    requests), ``admitted`` (requests admitted, in all) and ``arrivals`` (CPU microseconds of
    each step's ``add_request`` calls; admitting steps only)."""
    rng = random.Random(seed)
    extra = {"prepack": {"stats_path": stats_path}} if stats_path else None
    scheduler = make_scheduler(cls, model, budget=8192,
                               max_num_seqs=running + (FREE_SLOTS if admitting else 0),
                               num_blocks=1 << 16, prefix_caching=True, max_model_len=2048,
                               additional_config=extra)
    now = time.time()
    prompt = lambda n: [rng.randrange(10, 30000) for _ in range(n)]  # noqa: E731
    _start_decoding(scheduler, [prompt(rng.randint(16, 512)) for _ in range(running)], now)
    arrivals = itertools.count()
    m: dict = {"costs": [], "own": [], "arrivals": [], "admitted": 0}
    made = 0.0  # thread seconds spent building requests: not the scheduler's

    def arrive(n: int) -> float:
        """``n`` new waiting requests (each ends on its first token when admitting); the
        thread seconds of their ``add_request`` calls."""
        nonlocal made
        c0 = time.thread_time()
        new = [make_request(prompt(rng.choice((64, 256, 512, 1024, 2000))),
                            max_tokens=1 if admitting else 10_000,
                            arrival=now + i * 1e-3, req_id=f"wait{i}")
               for i in itertools.islice(arrivals, n)]
        c1 = time.thread_time()
        made += c1 - c0
        for request in new:
            scheduler.add_request(request)
        return time.thread_time() - c1

    arrive(waiting)
    made, p0 = 0.0, time.process_time()
    for _ in range(steps):
        c0 = time.thread_time()
        out = scheduler.schedule()
        scheduler.update_from_output(out, runner_output(scheduler, out))
        m["costs"].append(1e6 * (time.thread_time() - c0))
        m["own"].append(1e6 * getattr(scheduler, "prepack_step_cpu_s", 0.0))
        new = len(out.scheduled_new_reqs)
        m["admitted"] += new
        if admitting:
            m["arrivals"].append(1e6 * arrive(new))
        assert admitting or not new, "a decode-only step admitted a request"
    jsonl = getattr(getattr(scheduler, "prepack_observer", None), "jsonl", None)
    if jsonl is not None:
        jsonl.flush()
    m["process"] = 1e6 * (time.process_time() - p0 - made) / steps
    return m


def _p90(xs: list[float]) -> float:
    return round(sorted(xs)[int(0.9 * (len(xs) - 1))], 1)


def run_rows(model: str, running: int, waiting: list[int], steps: int,
             seed: int, admitting: bool = False) -> list[dict]:
    """One row per waiting-queue size: each arm's step cost, and prepack's own work."""
    rows = []
    stats_dir = tempfile.mkdtemp(prefix="planner_cost_")
    for w in waiting:
        row = {"waiting": w, "running": running}
        for arm, (cls, with_stats) in ARMS.items():
            path = f"{stats_dir}/{arm}_{w}.jsonl" if with_stats else None
            m = step_costs(cls, model, running, w, steps, seed, path, admitting)
            row[f"{arm}_us_median"] = round(statistics.median(m["costs"]), 1)
            row[f"{arm}_us_p90"] = _p90(m["costs"])
            row[f"{arm}_process_us_per_step"] = round(m["process"], 1)
            if admitting:
                row[f"{arm}_admitted_per_step"] = round(m["admitted"] / steps, 2)
                row[f"{arm}_arrivals_us_median"] = round(statistics.median(m["arrivals"]), 1)
            if arm != "stock":
                # The prepack scheduler's own work per step, timed inside schedule():
                # planning, candidates and statistics (vLLM's pass excluded).
                row[f"{arm}_own_us_median"] = round(statistics.median(m["own"]), 1)
                row[f"{arm}_own_us_p90"] = _p90(m["own"])
        rows.append(row)
        print(f"waiting {w:5d}: stock {row['stock_us_median']:7.1f} us/step, prepack "
              f"{row['prepack_us_median']:7.1f} us/step, of which its own work "
              f"{row['prepack_own_us_median']:.1f} us (p90 {row['prepack_own_us_p90']:.1f}); "
              f"with a statistics file {row['prepack-stats_us_median']:7.1f} us/step, "
              f"process CPU {row['prepack-stats_process_us_per_step']:.1f} us/step against "
              f"{row['prepack_process_us_per_step']:.1f} without"
              + (f"; admitted a step: stock {row['stock_admitted_per_step']}, prepack "
                 f"{row['prepack_admitted_per_step']}" if admitting else ""), flush=True)
    return rows


@dataclass(frozen=True)
class Options:
    """The CLI of ``python -m benchmarks.planner_cost``, one field per flag."""

    model: str = ".models/tiny-llama"  # a local config
    waiting: str = "0,300,1000"
    running: int = 128
    steps: int = 300
    seed: int = 0
    admitting: bool = False  # free slots: every step plans and admits (else decode-only)
    out: str | None = None


def run(o: Options) -> dict:
    """Every waiting-queue size; the JSON (also to ``o.out``)."""
    rows = run_rows(o.model, o.running, [int(w) for w in o.waiting.split(",")], o.steps,
                    o.seed, o.admitting)
    kind = "admitting steps" if o.admitting else "decode-only steps"
    result = {"benchmark": f"per-step scheduler CPU cost, {kind} (CPU)",
              **harness.environment(), "running": o.running, "steps": o.steps,
              "admitting": o.admitting, "budget": 8192,
              "free_slots": FREE_SLOTS if o.admitting else 0, "prefix_caching": True,
              "timer": "time.thread_time around schedule() + update_from_output()",
              "process_timer": "time.process_time over the steps (every thread), the "
                               "statistics file flushed at the end",
              "own_timer": "time.thread_time inside PrepackSchedulerMixin.schedule() around "
                           "planning and statistics (prepack_step_cpu_s)", "rows": rows}
    if o.out:
        harness.write_json(o.out, result)
        print("wrote", o.out)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.planner_cost",
                                     description=__doc__.splitlines()[0])
    harness.add_flags(parser, Options, {"model": "a local config"})
    return run(Options(**vars(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
