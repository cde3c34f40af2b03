"""``benchmarks.step_timing`` on a fake engine core."""

from __future__ import annotations

import pytest


def fake_core():
    """An engine core's scheduler and executor, two steps of two requests: one prompt of 100
    tokens in two chunks, one decoding; the first executor call does 2 ms of host work."""
    import time
    from types import SimpleNamespace as NS

    requests = {"a": NS(num_computed_tokens=0, num_prompt_tokens=100),
                "b": NS(num_computed_tokens=50, num_prompt_tokens=50)}
    plan = iter([{"a": 64, "b": 1}, {"a": 36, "b": 1}])

    class Scheduler:
        waiting, running = [1, 2], [3]

        def __init__(self):
            self.requests = requests

        def schedule(self):
            step = next(plan)
            for req_id, n in step.items():  # vLLM advances computed tokens while scheduling
                requests[req_id].num_computed_tokens += n
            return NS(num_scheduled_tokens=step, total_num_scheduled_tokens=sum(step.values()))

        def update_from_output(self, output, model_output):
            return model_output

    class Executor:
        def execute_model(self, output, non_block=False):
            t = time.thread_time()
            while time.thread_time() - t < 0.002:  # host work: counted as the thread's CPU
                pass
            return "future"

        def sample_tokens(self, grammar, non_block=False):
            return None

    return NS(scheduler=Scheduler(), model_executor=Executor())


def test_step_timer_records_each_step_and_its_output():
    """The wrappers on a fake engine core: one row per schedule(), features from the
    scheduled requests, executor time and output time attributed to the right step."""
    import gc

    from benchmarks import step_timing

    core = fake_core()
    timer = step_timing.attach(core)
    first = core.scheduler.schedule()
    assert core.model_executor.execute_model(first, non_block=True) == "future"
    second = core.scheduler.schedule()
    core.model_executor.sample_tokens(None, non_block=True)
    assert core.scheduler.update_from_output(second, "out2") == "out2"
    core.scheduler.update_from_output(first, "out1")
    gc.collect()
    cols = timer.columns()
    assert list(cols) == [*step_timing.COLUMNS, "process"] and len(cols["t"]) == 2
    assert cols["exec_cpu_s"][0] >= 0.002 and cols["exec_cpu_s"][1] < 0.002
    assert cols["exec_s"][0] >= cols["exec_cpu_s"][0] - 1e-4  # two clocks, their ticks
    proc = cols["process"]
    assert proc["gc_collections"][2] >= 1 and proc["gc_s"] > 0
    assert proc["thread_cpu_s"] >= 0.002 and proc["wall_s"] >= proc["thread_cpu_s"]
    assert len(proc["loadavg_1m"]) == 2 and proc["thread_involuntary_switches"] >= 0
    assert cols["prefill"] == [64, 36] and cols["prefill_reqs"] == [1, 1]
    assert cols["decode_reqs"] == [1, 1] and cols["tokens"] == [65, 37]
    assert cols["ctx"] == [64 + 51, 100 + 52]
    assert cols["waiting_before"] == [2, 2] and cols["running"] == [1, 1]
    assert all(x >= 0 for x in cols["t_out"]) and cols["t_out"][1] <= cols["t_out"][0]
    summary = step_timing.summarize(cols)
    assert summary["steps"] == 2 and summary["prefill_steps"] == 2
    assert summary["prefill_tokens"] == 100 and summary["decode_rows"] == 2
    assert summary["exec_s_total"] == pytest.approx(sum(cols["exec_s"]), abs=1e-3)
    assert summary["process"] == proc
    timer.reset()
    assert timer.columns()["t"] == [] and timer.columns()["process"]["gc_collections"][2] == 0


def test_step_timing_cli_summarizes_a_steps_file(tmp_path):
    """``python -m benchmarks.step_timing FILE``: one summary per (workload, arm, rep)."""
    import json

    from benchmarks import step_timing

    cols = {c: [0.0, 0.0] for c in step_timing.COLUMNS}
    cols.update(t=[0.0, 0.01], t_out=[0.005, 0.02], prefill=[64, 0], decode_reqs=[0, 1],
                waiting_before=[1, 0], exec_s=[0.004, 0.002], exec_cpu_s=[0.003, 0.001])
    path = tmp_path / "x_steps.json"
    path.write_text(json.dumps({"columns": step_timing.COLUMNS,
                                "steps": {"mix": {"stock": [{"rep": 0, **cols}]}}}))
    out = step_timing.main([str(path), "--out", str(tmp_path / "summary.json")])
    (row,) = out["mix"]["stock"]
    assert row["rep"] == 0 and row["steps"] == 2 and row["prefill_steps"] == 1
    assert (row["prefill_tokens"], row["decode_rows"], row["exec_s_total"]) == (64, 1, 0.006)
    # The decode-only step (the second: no prompt tokens, nothing waiting) and its parts.
    assert row["decode_only_parts"] == {"steps": 1, "period_ms": 15.0, "sched_ms": 0.0,
                                        "exec_ms": 2.0, "exec_cpu_ms": 1.0, "update_ms": 0.0,
                                        "decode_reqs": 1}
    assert "process" not in row  # a steps file without the process's counters
    assert json.loads((tmp_path / "summary.json").read_text())["summaries"] == out
