"""The trace simulator at CI size: vLLM's real schedulers on a virtual clock, a trace window of
the Azure conversation trace (or a synthetic one), the step model fitted to H200 timings."""

from __future__ import annotations

import json

import pytest

from benchmarks import serve_lengths, trace_sim_drive, trace_sim_model, trace_sim_options
from vllm_prepack.config import PrepackConfig


def _requests(n: int = 60, rate: float = 400.0) -> list[trace_sim_drive.Request]:
    # Prompts of mixed lengths arriving faster than the engine drains them: a queue forms.
    lengths = [(17 * i) % 400 + 8 for i in range(n)]
    return [trace_sim_drive.Request(i / rate, p, 4 + i % 5) for i, p in enumerate(lengths)]


def _run(tiny_model: str, arm: str, **kw) -> trace_sim_drive.Run:
    return trace_sim_drive.simulate(
        arm, _requests(), model=tiny_model, budget=256, max_num_seqs=8, num_blocks=512,
        max_model_len=1024, step_model=trace_sim_model.STEP_MODELS["llama-3.1-8b"], seed=0,
        **{"cpu_scale": 0.0, **kw})


@pytest.mark.parametrize("arm", ["stock", "stretch", "sjf", "hrrn", "fcfs"])
def test_every_request_gets_its_first_token_and_every_output(tiny_model, arm):
    run, reqs = _run(tiny_model, arm), _requests()
    assert len(run.ttft) == len(reqs) and all(t > 0 for t in run.ttft.values())
    assert run.output_tokens == sum(r.output_len for r in reqs)
    m = trace_sim_drive.metrics(run)
    assert m["ttft_p50_s"] <= m["ttft_p99_s"] and m["throughput_tok_s"] > 0
    # Every request decoding 4+ tokens has a time per output token, at least one step's time.
    assert set(run.tpot) == set(run.ttft)
    assert min(run.tpot.values()) >= trace_sim_model.STEP_MODELS["llama-3.1-8b"].base
    # Held (from the first step that could schedule a request to the one that did): a part of
    # each request's TTFT; under this queue some requests are held.
    assert set(run.held) == set(run.ttft) and 0 < m["held_mean_s"] < m["ttft_mean_s"]
    assert all(0 <= run.held[r] < run.ttft[r] for r in run.ttft)
    if arm != "stock":  # our scheduler ran: its observer counted the admissions
        assert run.counters["admitted"] == len(reqs)


def test_ttft_by_prompt_length_is_each_class_mean(tiny_model):
    reqs = [trace_sim_drive.Request(i / 400.0, (137 * i) % 900 + 8, 4) for i in range(40)]
    run = trace_sim_drive.simulate(
        "stretch", reqs, model=tiny_model, budget=256, max_num_seqs=8, num_blocks=512,
        max_model_len=1024, step_model=trace_sim_model.STEP_MODELS["llama-3.1-8b"], seed=0,
        cpu_scale=0.0)
    by = trace_sim_drive.metrics(run)["ttft_mean_s_by_length"]
    assert list(by) == ["< 512", "512-2047"]
    for c, mean in by.items():
        mine = [run.ttft[f"r{i}"] for i, r in enumerate(reqs)
                if serve_lengths.class_of(r.prompt_len) == c]
        assert mean == pytest.approx(sum(mine) / len(mine))


@pytest.mark.parametrize("arm", ["stock", "stretch"])
def test_preemptions_are_counted_and_lose_no_request(tiny_model, arm):
    # 40-44 output tokens each: running requests outgrow a 40-block KV cache and vLLM preempts.
    reqs = [trace_sim_drive.Request(i / 400.0, (17 * i) % 400 + 8, 40 + i % 5) for i in range(60)]
    runs = {blocks: trace_sim_drive.simulate(
        arm, reqs, model=tiny_model, budget=256, max_num_seqs=8, num_blocks=blocks,
        max_model_len=1024, step_model=trace_sim_model.STEP_MODELS["llama-3.1-8b"], seed=0,
        cpu_scale=0.0) for blocks in (40, 512)}
    assert runs[40].preemptions > 0 and runs[512].preemptions == 0
    for run in runs.values():
        assert len(run.ttft) == len(reqs) and run.output_tokens == sum(r.output_len for r in reqs)
        assert trace_sim_drive.metrics(run)["preemptions"] == run.preemptions


def test_the_deadline_order_lets_short_prompts_overtake_under_a_queue(tiny_model):
    stock, ours = _run(tiny_model, "stock"), _run(tiny_model, "stretch")
    assert ours.counters["overtakes"] > 0
    short = [f"r{i}" for i, r in enumerate(_requests()) if r.prompt_len < 100]
    mean = lambda run: sum(run.ttft[k] for k in short) / len(short)  # noqa: E731
    assert mean(ours) < mean(stock)


def test_async_scheduling_sees_an_arrival_one_step_late(tiny_model):
    # r1 arrives during r0's prefill step: async, the next step was already scheduled.
    model = trace_sim_model.STEP_MODELS["llama-3.1-8b"]
    reqs = [trace_sim_drive.Request(0.0, 200, 20), trace_sim_drive.Request(0.001, 50, 2)]

    def ttft(async_scheduling: bool) -> dict:
        return trace_sim_drive.simulate(
            "stock", reqs, model=tiny_model, budget=256, max_num_seqs=8, num_blocks=512,
            max_model_len=1024, step_model=model, seed=0, cpu_scale=0.0,
            async_scheduling=async_scheduling).ttft

    sync, late = ttft(False), ttft(True)
    assert late["r0"] == sync["r0"]  # the engine was idle: scheduled on arrival
    assert late["r1"] == pytest.approx(sync["r1"] + model.seconds(
        {"prefill_tokens": 0, "decodes": 1, "attn": 0, "decode_ctx": 0}))  # one decode step


def test_async_scheduling_frees_a_finished_requests_slot_one_step_later(tiny_model):
    # vLLM's async scheduler classes, pipelined as the engine core runs them: step k + 1 is
    # scheduled before step k's output is applied, so r2 gets the slot that r0's last token
    # frees one step later than without async scheduling (r1 decodes in between).
    model = trace_sim_model.STEP_MODELS["llama-3.1-8b"]
    reqs = [trace_sim_drive.Request(0.0, 40, 2), trace_sim_drive.Request(0.0, 40, 20),
            trace_sim_drive.Request(0.0, 40, 2)]

    def run(arm: str, async_scheduling: bool) -> trace_sim_drive.Run:
        return trace_sim_drive.simulate(
            arm, reqs, model=tiny_model, budget=256, max_num_seqs=2, num_blocks=512,
            max_model_len=1024, step_model=model, seed=0, cpu_scale=0.0,
            async_scheduling=async_scheduling)

    decode = model.seconds({"prefill_tokens": 0, "decodes": 1, "attn": 0, "decode_ctx": 0})
    for arm in ("stock", "stretch"):
        sync, pipelined = run(arm, False), run(arm, True)
        assert pipelined.ttft["r0"] == sync.ttft["r0"]
        assert pipelined.ttft["r2"] == pytest.approx(sync.ttft["r2"] + decode)


def test_the_simulator_is_deterministic_without_scheduler_cpu_time(tiny_model):
    assert _run(tiny_model, "stretch").ttft == _run(tiny_model, "stretch").ttft


def test_arm_names_and_errors():
    assert trace_sim_options.arm_options("stock") is None
    assert trace_sim_options.arm_options("stretch4q0") == {"stretch": 4.0, "tail_quantile": 0.0}
    assert trace_sim_options.arm_options("stretch2") == {"stretch": 2.0}
    assert trace_sim_options.arm_options("stretch2q0.9l16") == {
        "stretch": 2.0, "tail_quantile": 0.9, "lookahead": 16}
    assert trace_sim_options.arm_options("stretch2l512") == {"stretch": 2.0, "lookahead": 512}
    assert trace_sim_options.arm_options("stretch8q0.9-kv-off") == {
        "stretch": 8.0, "tail_quantile": 0.9, "kv_reserve": "off"}
    assert trace_sim_options.arm_options("stretch-kv-off") == {"kv_reserve": "off"}
    for bad in ("lifo", "stretch2x", "stretch1.2.3", "stretch2l1.5", "stretchq1"):
        with pytest.raises(ValueError, match=f"unknown arm '{bad}'; accepted: stock"):
            trace_sim_options.arm_options(bad)
    for options in trace_sim_options.ARMS.values():  # every arm is a valid configuration
        PrepackConfig.from_dict(options or {})


def test_a_result_records_the_policy_each_arm_ran():
    policy_of = trace_sim_options.policy_of
    defaults = PrepackConfig()
    assert policy_of("stock") is None
    assert policy_of("stretch") == {"policy": "stretch", "stretch": defaults.stretch,
                                    "tail_quantile": defaults.tail_quantile,
                                    "lookahead": defaults.lookahead,
                                    "kv_reserve": defaults.kv_reserve}
    assert policy_of("stretch8q0")["stretch"] == 8.0 and policy_of("sjf")["policy"] == "sjf"
    assert policy_of("stretch-kv-off")["kv_reserve"] == "off"


def test_the_simulator_is_deterministic_with_the_host_model(tiny_model):
    runs = [_run(tiny_model, "stretch", cpu_scale=1.6) for _ in range(2)]
    assert runs[0].ttft == runs[1].ttft
    with pytest.raises(ValueError, match="invalid host 'wall'; accepted: model, measured"):
        _run(tiny_model, "stock", host="wall")


def test_measured_host_time_is_collected_per_step(tiny_model):
    samples: list = []
    run = _run(tiny_model, "stock", cpu_scale=1.0, host="measured", samples=samples)
    assert len(samples) == run.steps
    assert all(s[2] >= 0 and s[0] >= s[1] for s in samples)  # the admitted are scheduled
    assert sum(s[1] for s in samples) == len(_requests())  # each admitted once


def test_the_host_fit_cli_writes_a_pooled_and_a_per_arm_fit(tmp_path):
    from benchmarks import trace_sim
    from benchmarks.tests.suite_env import TRACE_CSV

    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE_CSV)
    out = tmp_path / "fit.json"
    result = trace_sim.main(["--fit-host", "--trace", str(trace), "--n", "6", "--budgets", "256",
                             "--loads", "1.0,2.0", "--arms", "stock,stretch", "--seeds", "0",
                             "--max-num-seqs", "4", "--num-blocks", "256", "--out", str(out)])
    assert json.loads(out.read_text())["host_model"] == result["host_model"]
    assert set(result["per_arm"]) == {"stock", "stretch"}
    pooled = result["host_model"]["fit"]["steps"]
    assert pooled == sum(f["fit"]["steps"] for f in result["per_arm"].values()) > 0
    assert set(result["host_model"]["model"]) == {"base", "per_scheduled", "per_new"}


def test_step_noise_is_drawn_per_noise_seed(tiny_model):
    """Noise 0 is the model's time; a noise seed repeats its draws; another seed draws others."""
    plain = _run(tiny_model, "stretch")
    assert _run(tiny_model, "stretch", step_noise=0.0, noise_seed=5).ttft == plain.ttft
    noisy = [_run(tiny_model, "stretch", step_noise=0.3, noise_seed=s) for s in (1, 1, 2)]
    assert noisy[0].ttft == noisy[1].ttft != noisy[2].ttft and noisy[0].ttft != plain.ttft
    assert all(len(r.ttft) == len(plain.ttft) for r in noisy)  # nothing lost to the noise


def test_replicas_run_every_arm_on_the_same_window_with_fresh_noise(tmp_path):
    from benchmarks import trace_sim
    from benchmarks.tests.suite_env import TRACE_CSV

    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE_CSV)
    args = ["--trace", str(trace), "--n", "6", "--budgets", "256", "--loads", "2.0",
            "--arms", "stock,stretch", "--seeds", "0", "--max-num-seqs", "4",
            "--num-blocks", "256"]
    result = trace_sim.main([*args, "--step-noise", "0.3", "--replicas", "3"])
    assert (result["step_noise"], result["replicas"]) == (0.3, 3)
    (point,) = result["points"]
    runs = point["per_arm"]["stock"]
    assert len(runs) == len(point["per_arm"]["stretch"]) == 3
    assert len({r["makespan_s"] for r in runs}) == 3  # each replica its own draws
    assert all(r["completed"] == 6 for arm in point["per_arm"].values() for r in arm)
    with pytest.raises(SystemExit):
        trace_sim.parse([*args, "--step-noise", "-0.1"])
