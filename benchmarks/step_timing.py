"""Per-step timing of an in-process engine core, for calibrating a step-time model.

:func:`attach` wraps, on the instances (the classes stay untouched, so it works for vLLM's
scheduler and ours alike), the scheduler's ``schedule`` and ``update_from_output`` and the
executor's ``execute_model`` and ``sample_tokens``. One row per ``schedule()`` call:

    t            schedule() start, seconds since :meth:`StepTimer.reset`
    sched_s      schedule() wall time (for prepack: planning, presentation and vLLM's pass)
    sched_cpu_s  schedule() CPU time of the calling thread (``time.thread_time``)
    prefill      prompt tokens scheduled (requests still in their prompt)
    prefill_reqs requests that received prompt tokens
    decode_reqs  scheduled requests past their prompt
    tokens       all tokens scheduled
    ctx          context of the scheduled requests: sum of their computed tokens after
                 this step (what attention reads)
    waiting      requests waiting after the step was scheduled (``waiting_before``: before)
    running      requests running after the step was scheduled
    exec_s       wall time inside the executor's execute_model + sample_tokens calls for
                 this step (host side: input preparation and kernel launches, plus the wait
                 where the call blocks)
    t_out        when update_from_output was called with this step's model output (the
                 output is ready), seconds since reset; -1 if it never came
    update_s     update_from_output wall time
    exec_cpu_s   CPU time of the calling thread inside those executor calls (against
                 ``exec_s``: a thread that waits, for the GPU, the GIL or a busy host core)

With synchronous scheduling a step is ``t .. t_out + update_s``; with asynchronous scheduling
(two batches in flight) steps overlap, and the step period is the gap between consecutive
``t_out``. The feature bookkeeping runs outside the timed calls. Columns are lists (compact
JSON), with ``process``: the process's CPU time, context switches and garbage collections over
the rows (:mod:`benchmarks.process_counters`); :func:`~benchmarks.step_summary.summarize` gives
the few numbers a run's record carries.

    python -m benchmarks.step_timing benchmarks/results/trace_llm_8b_b2048_4x_h200_steps.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.process_counters import ProcessCounters
from benchmarks.step_summary import summarize

COLUMNS = ("t", "sched_s", "sched_cpu_s", "prefill", "prefill_reqs", "decode_reqs", "tokens",
           "ctx", "waiting_before", "waiting", "running", "exec_s", "t_out", "update_s",
           "exec_cpu_s")
_FLOAT = {"t", "sched_s", "sched_cpu_s", "exec_s", "t_out", "update_s", "exec_cpu_s"}


class StepTimer:
    def __init__(self, scheduler: Any, executor: Any | None = None) -> None:
        self.scheduler, self.executor = scheduler, executor
        self.rows: list[list[float]] = []
        self._by_output: dict[int, list[float]] = {}
        self._current: list[float] | None = None
        self.t0 = time.perf_counter()
        self.enabled = True
        self.counters = ProcessCounters()

    def reset(self) -> None:
        self.rows.clear()
        self._by_output.clear()
        self._current = None
        self.t0 = time.perf_counter()
        self.counters.reset()

    def _features(self, output: Any) -> tuple[int, int, int, int, int]:
        requests = self.scheduler.requests
        prefill = prefill_reqs = decode = ctx = 0
        for req_id, tokens in output.num_scheduled_tokens.items():
            r = requests.get(req_id)
            if r is None:
                continue
            # vLLM has advanced num_computed_tokens by this step's tokens already.
            before = r.num_computed_tokens - tokens
            ctx += r.num_computed_tokens
            if before < r.num_prompt_tokens:
                prefill += min(tokens, r.num_prompt_tokens - before)
                prefill_reqs += 1
            else:
                decode += 1
        return prefill, prefill_reqs, decode, ctx, output.total_num_scheduled_tokens

    def schedule(self, inner: Any, *args: Any, **kwargs: Any) -> Any:
        waiting_before = len(self.scheduler.waiting)
        t, c = time.perf_counter(), time.thread_time()
        output = inner(*args, **kwargs)
        c1, t1 = time.thread_time(), time.perf_counter()
        if not self.enabled:
            return output
        prefill, prefill_reqs, decode, ctx, tokens = self._features(output)
        row = [t - self.t0, t1 - t, c1 - c, prefill, prefill_reqs, decode, tokens, ctx,
               waiting_before, len(self.scheduler.waiting), len(self.scheduler.running),
               0.0, -1.0, 0.0, 0.0]
        self.rows.append(row)
        self._by_output[id(output)] = row
        self._current = row
        return output

    def executor_call(self, inner: Any, *args: Any, **kwargs: Any) -> Any:
        t, c = time.perf_counter(), time.thread_time()
        try:
            return inner(*args, **kwargs)
        finally:
            if self._current is not None:
                self._current[11] += time.perf_counter() - t
                self._current[14] += time.thread_time() - c

    def update(self, inner: Any, scheduler_output: Any, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        out = inner(scheduler_output, *args, **kwargs)
        row = self._by_output.pop(id(scheduler_output), None)
        if row is not None:
            row[12], row[13] = t - self.t0, time.perf_counter() - t
        return out

    def columns(self) -> dict[str, Any]:
        """Rows as columns, times rounded to the microsecond, and ``process``
        (the process's counters since :meth:`reset`)."""
        cols: dict[str, Any] = {}
        for i, name in enumerate(COLUMNS):
            if name in _FLOAT:
                cols[name] = [round(row[i], 6) for row in self.rows]
            else:
                cols[name] = [int(row[i]) for row in self.rows]
        cols["process"] = self.counters.read()
        return cols


def _wrap(obj: Any, name: str, hook: Any) -> None:
    inner = getattr(obj, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        return hook(inner, *args, **kwargs)

    setattr(obj, name, wrapped)


def attach(engine_core: Any) -> StepTimer:
    """Time every step of an in-process ``EngineCore`` (``VLLM_ENABLE_V1_MULTIPROCESSING=0``).
    Attach after any other instance-level wrapper of ``schedule`` (the packing observer), so
    that the scheduler's time includes it, as it does in a prepack scheduler's own
    ``schedule``."""
    scheduler, executor = engine_core.scheduler, engine_core.model_executor
    timer = StepTimer(scheduler, executor)
    _wrap(scheduler, "schedule", timer.schedule)
    _wrap(scheduler, "update_from_output", timer.update)
    for name in ("execute_model", "sample_tokens"):
        _wrap(executor, name, timer.executor_call)
    return timer


@dataclass(frozen=True)
class Options:
    """The CLI of ``python -m benchmarks.step_timing``: a steps file to summarize."""

    steps_file: str
    out: str | None = None


def run(o: Options) -> dict:
    """:func:`summarize` of every (workload, arm, repetition) of a ``benchmarks.ab`` steps
    file (``*_steps.json``); printed, and written to ``o.out`` when given."""
    data = json.loads(Path(o.steps_file).read_text())
    out: dict = {}
    for workload, arms in data["steps"].items():
        for arm, reps in arms.items():
            for cols in reps:
                s = summarize(cols)
                out.setdefault(workload, {}).setdefault(arm, []).append(
                    {"rep": cols.get("rep"), **s})
                print(f"{workload:>20} {arm:>15} rep {cols.get('rep')}: {s['steps']} steps, "
                      f"sched {s.get('sched_ms_mean')} ms, step period "
                      f"{s.get('step_period_ms_mean')} ms; work: {s.get('prefill_tokens')} "
                      f"prompt tokens, {s.get('decode_rows')} decode rows in "
                      f"{s.get('exec_s_total')} s of execution", flush=True)
                parts, proc = s["decode_only_parts"], s.get("process")
                if parts.get("steps"):
                    print(f"{'':>37}decode-only, < 50 waiting: {parts}", flush=True)
                if proc:
                    print(f"{'':>37}process: {proc}", flush=True)
    if o.out:
        from benchmarks import harness

        harness.write_json(o.out, {"benchmark": "step timing summary", **harness.environment(),
                                   "steps_file": o.steps_file, "summaries": out})
        print("wrote", o.out)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_timing",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("steps_file", help="a benchmarks.ab steps file (*_steps.json)")
    parser.add_argument("--out", help="write the summaries as JSON here")
    return run(Options(**vars(parser.parse_args(sys.argv[1:] if argv is None else argv))))


if __name__ == "__main__":
    main()
