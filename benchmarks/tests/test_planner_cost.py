"""``benchmarks.planner_cost``: the schedulers' per-step CPU cost on decode-only and admitting
steps (no timing asserted: only which steps ran and what was recorded)."""

from __future__ import annotations

import json

from benchmarks import planner_cost
from vllm_prepack.adapters.scheduler import PrepackSyncScheduler


def test_admitting_steps_plan_admit_and_keep_the_queue_full(tiny_model):
    m = planner_cost.step_costs(PrepackSyncScheduler, tiny_model, running=4, waiting=30,
                                steps=6, seed=0, admitting=True)
    assert m["admitted"] >= 6  # every step admits: slots are free and prompts wait
    assert len(m["costs"]) == len(m["own"]) == len(m["arrivals"]) == 6
    assert all(x > 0 for x in m["own"])  # the planner ran on every step
    assert m["process"] > 0


def test_decode_only_steps_admit_nothing(tiny_model):
    m = planner_cost.step_costs(PrepackSyncScheduler, tiny_model, running=4, waiting=30,
                                steps=4, seed=0)
    assert m["admitted"] == 0 and m["arrivals"] == []


def test_run_writes_one_row_per_queue_size(tmp_path, tiny_model):
    out = tmp_path / "planner_cost.json"
    result = planner_cost.main(["--model", tiny_model, "--waiting", "0,20", "--running", "4",
                                "--steps", "4", "--admitting", "--out", str(out)])
    zero, twenty = result["rows"]
    assert (zero["waiting"], twenty["waiting"]) == (0, 20)
    for arm in planner_cost.ARMS:
        assert zero[f"{arm}_admitted_per_step"] == 0
        assert twenty[f"{arm}_admitted_per_step"] >= 1
    written = json.loads(out.read_text())
    assert written["rows"] == result["rows"] and written["admitting"] is True
    assert written["benchmark"].endswith("admitting steps (CPU)") and written["git_commit"]
    plain = planner_cost.main(["--model", tiny_model, "--waiting", "10", "--running", "4",
                               "--steps", "2", "--no-admitting"])
    assert plain["admitting"] is False and "stock_admitted_per_step" not in plain["rows"][0]
