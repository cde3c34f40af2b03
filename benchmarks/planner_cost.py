"""Per-step CPU cost of the prepack scheduler against vLLM's, at several waiting-queue sizes.

vLLM's real ``Scheduler`` and ours, no model: ``running`` requests decode (every slot taken,
so no step admits anything: a decode-only step), ``waiting`` requests of trace-like lengths
wait behind them, prefix caching on. Each step is ``schedule()`` + ``update_from_output()``
(one sampled token each); the cost of a step is its CPU time (``time.thread_time``). The
prepack overhead is our step minus stock's at the same queue size; it must not grow with the
queue (nothing per step walks the waiting requests or their block hashes).

    python -m benchmarks.planner_cost --waiting 0,300,1000 --running 128 \\
        --out benchmarks/results/planner_cost_cpu.json
"""

from __future__ import annotations

import argparse
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


def step_costs(cls, model: str, running: int, waiting: int, steps: int, seed: int,
               stats_path: str | None = None) -> tuple[list[float], list[float], float]:
    """CPU microseconds of each of ``steps`` decode-only steps (the stepping thread's), of the
    prepack scheduler's own work in each, and the process's CPU microseconds per step (every
    thread: the statistics file's writer included, until the file holds every step)."""
    rng = random.Random(seed)
    extra = {"prepack": {"stats_path": stats_path}} if stats_path else None
    scheduler = make_scheduler(cls, model, budget=8192, max_num_seqs=running,
                               num_blocks=1 << 16, prefix_caching=True, max_model_len=2048,
                               additional_config=extra)
    now = time.time()
    prompt = lambda n: [rng.randrange(10, 30000) for _ in range(n)]  # noqa: E731
    for i in range(running):  # admitted first: they hold every slot
        scheduler.add_request(make_request(prompt(rng.randint(16, 512)), max_tokens=10_000,
                                           arrival=now, req_id=f"run{i}"))
    while len(scheduler.running) < running or any(
            r.num_computed_tokens < r.num_prompt_tokens for r in scheduler.running):
        out = scheduler.schedule()
        scheduler.update_from_output(out, runner_output(scheduler, out))
    for i in range(waiting):
        scheduler.add_request(make_request(prompt(rng.choice((64, 256, 512, 1024, 2000))),
                                           arrival=now + i * 1e-3, req_id=f"wait{i}"))
    costs, own = [], []
    p0 = time.process_time()
    for _ in range(steps):
        c0 = time.thread_time()
        out = scheduler.schedule()
        scheduler.update_from_output(out, runner_output(scheduler, out))
        costs.append(1e6 * (time.thread_time() - c0))
        own.append(1e6 * getattr(scheduler, "prepack_step_cpu_s", 0.0))
        assert not out.scheduled_new_reqs, "a decode-only step admitted a request"
    jsonl = getattr(getattr(scheduler, "prepack_observer", None), "jsonl", None)
    if jsonl is not None:
        jsonl.flush()
    return costs, own, 1e6 * (time.process_time() - p0) / steps


def run_rows(model: str, running: int, waiting: list[int], steps: int,
             seed: int) -> list[dict]:
    """One row per waiting-queue size: each arm's step cost, and prepack's own work."""
    rows = []
    stats_dir = tempfile.mkdtemp(prefix="planner_cost_")
    for w in waiting:
        row = {"waiting": w, "running": running}
        for arm, (cls, with_stats) in ARMS.items():
            path = f"{stats_dir}/{arm}_{w}.jsonl" if with_stats else None
            costs, own, process = step_costs(cls, model, running, w, steps, seed, path)
            row[f"{arm}_us_median"] = round(statistics.median(costs), 1)
            row[f"{arm}_us_p90"] = round(sorted(costs)[int(0.9 * (len(costs) - 1))], 1)
            row[f"{arm}_process_us_per_step"] = round(process, 1)
            if arm != "stock":
                # The prepack scheduler's own work per step, timed inside schedule():
                # planning, candidates and statistics (vLLM's pass excluded).
                row[f"{arm}_own_us_median"] = round(statistics.median(own), 1)
                row[f"{arm}_own_us_p90"] = round(sorted(own)[int(0.9 * (len(own) - 1))], 1)
        rows.append(row)
        print(f"waiting {w:5d}: stock {row['stock_us_median']:7.1f} us/step, prepack "
              f"{row['prepack_us_median']:7.1f} us/step, of which its own work "
              f"{row['prepack_own_us_median']:.1f} us (p90 {row['prepack_own_us_p90']:.1f}); "
              f"with a statistics file {row['prepack-stats_us_median']:7.1f} us/step, "
              f"process CPU {row['prepack-stats_process_us_per_step']:.1f} us/step against "
              f"{row['prepack_process_us_per_step']:.1f} without", flush=True)
    return rows


@dataclass(frozen=True)
class Options:
    """The CLI of ``python -m benchmarks.planner_cost``, one field per flag."""

    model: str = ".models/tiny-llama"  # a local config
    waiting: str = "0,300,1000"
    running: int = 128
    steps: int = 300
    seed: int = 0
    out: str | None = None


def run(o: Options) -> dict:
    """Every waiting-queue size; the JSON (also to ``o.out``)."""
    rows = run_rows(o.model, o.running, [int(w) for w in o.waiting.split(",")], o.steps,
                    o.seed)
    result = {"benchmark": "per-step scheduler CPU cost, decode-only steps (CPU)",
              **harness.environment(), "running": o.running, "steps": o.steps,
              "prefix_caching": True,
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
