"""``benchmarks.step_timing`` on a fake engine core."""

from __future__ import annotations

import pytest


def test_step_timer_records_each_step_and_its_output():
    """The wrappers on a fake engine core: one row per schedule(), features from the
    scheduled requests, executor time and output time attributed to the right step."""
    from types import SimpleNamespace as NS

    from benchmarks import step_timing

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
            return "future"

        def sample_tokens(self, grammar, non_block=False):
            return None

    core = NS(scheduler=Scheduler(), model_executor=Executor())
    timer = step_timing.attach(core)
    first = core.scheduler.schedule()
    assert core.model_executor.execute_model(first, non_block=True) == "future"
    second = core.scheduler.schedule()
    core.model_executor.sample_tokens(None, non_block=True)
    assert core.scheduler.update_from_output(second, "out2") == "out2"
    core.scheduler.update_from_output(first, "out1")
    cols = timer.columns()
    assert list(cols) == list(step_timing.COLUMNS) and len(cols["t"]) == 2
    assert cols["prefill"] == [64, 36] and cols["prefill_reqs"] == [1, 1]
    assert cols["decode_reqs"] == [1, 1] and cols["tokens"] == [65, 37]
    assert cols["ctx"] == [64 + 51, 100 + 52]
    assert cols["waiting_before"] == [2, 2] and cols["running"] == [1, 1]
    assert all(x >= 0 for x in cols["t_out"]) and cols["t_out"][1] <= cols["t_out"][0]
    summary = step_timing.summarize(cols)
    assert summary["steps"] == 2 and summary["prefill_steps"] == 2
    assert summary["prefill_tokens"] == 100 and summary["decode_rows"] == 2
    assert summary["exec_s_total"] == pytest.approx(sum(cols["exec_s"]), abs=1e-3)
    timer.reset()
    assert timer.columns()["t"] == []


def test_step_timing_cli_summarizes_a_steps_file(tmp_path):
    """``python -m benchmarks.step_timing FILE``: one summary per (workload, arm, rep)."""
    import json

    from benchmarks import step_timing

    cols = {c: [0.0, 0.0] for c in step_timing.COLUMNS}
    cols.update(t=[0.0, 0.01], t_out=[0.005, 0.02], prefill=[64, 0], decode_reqs=[0, 1],
                waiting_before=[1, 0], exec_s=[0.004, 0.002])
    path = tmp_path / "x_steps.json"
    path.write_text(json.dumps({"columns": step_timing.COLUMNS,
                                "steps": {"mix": {"stock": [{"rep": 0, **cols}]}}}))
    out = step_timing.main([str(path), "--out", str(tmp_path / "summary.json")])
    (row,) = out["mix"]["stock"]
    assert row["rep"] == 0 and row["steps"] == 2 and row["prefill_steps"] == 1
    assert (row["prefill_tokens"], row["decode_rows"], row["exec_s_total"]) == (64, 1, 0.006)
    assert json.loads((tmp_path / "summary.json").read_text())["summaries"] == out
