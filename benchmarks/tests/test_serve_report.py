"""The serving report's readings of a result: the floor any admission order has under the TTFT
ratio, and the prepack arm's decisions, from completed runs only."""

from __future__ import annotations

import pytest


def test_engine_floor_takes_stocks_engine_time_out_of_its_client_ttft():
    from benchmarks.serve_report import _floor_line, engine_floor

    def run(arm, lf, queue, ttft, ok=True, rep=0):
        split = {} if queue is None else {"server_queue_mean_ms": queue,
                                          "server_prefill_mean_ms": 50}
        return {"arm": arm, "load_factor": lf, "ok": ok, "bench": {"mean_ttft_ms": ttft},
                "metrics": split, "rep": rep}

    runs = [run("stock", 1.0, 50, 1000), run("stock", 1.0, 250, 1000, rep=1),
            run("prepack", 1.0, 0, 500), run("stock", 1.0, 900, 1000, ok=False, rep=2),
            run("prepack", 1.0, 0, 400, rep=2), run("stock", 1.5, None, 800)]
    result = {"runs": runs, "per_load": {"1": {}, "1.5": {}}}
    # mean of 0.9 and 0.7; the prepack arm's and the failed run's left out
    assert engine_floor(result, "1") == pytest.approx(0.8)
    assert engine_floor(result, "1.5") is None  # no server split recorded
    line = _floor_line(result)
    assert "unchanged): 1x 0.80." in line
    # the engine's part over the one pair with both arms complete: (0 + 50) / (50 + 50)
    assert line.endswith("prepack vs stock: 1x 0.50 [0.50-0.50] (single run).\n")
    assert _floor_line({"runs": runs[-1:], "per_load": {"1.5": {}}}) == ""


def test_decisions_count_the_prepack_arms_completed_runs_only():
    from benchmarks.serve_report import decisions, same_admissions

    def run(arm, lf, overtakes, ok=True, wait=0.5):
        packing = {"overtakes": overtakes, "partial_prefills": 2 * overtakes,
                   "max_oldest_wait_s": wait}
        return {"arm": arm, "load_factor": lf, "ok": ok, "packing": packing}

    runs = [run("prepack", 1.0, 10), run("prepack", 1.0, 20), run("stock", 1.0, 99),
            run("prepack", 1.0, 300, ok=False, wait=9.0), run("prepack", 0.5, 0, wait=0.0)]
    decided = decisions({"runs": runs}, "1")
    # the failed run's partial statistics and the stock arm's are left out
    assert decided == {"overtakes_per_run": 15, "split_per_run": 30, "max_oldest_wait_s": 0.5}
    assert not same_admissions(decided)
    assert same_admissions(decisions({"runs": runs}, "0.5"))
    assert decisions({"runs": runs}, "1.5") is None


def test_cpu_line_gives_each_arms_mean_busy_share_per_load():
    from benchmarks.serve_report import _cpu_line, cpu_busy_means

    def run(arm, rep, api, ok=True):
        return {"arm": arm, "load_factor": 1.0, "rep": rep, "ok": ok,
                "cpu_busy": {"api_server": api, "engine": 1.0, "client": 0.5}}

    runs = [run("stock", 0, 0.4), run("stock", 1, 0.6), run("prepack", 0, 0.9),
            run("prepack", 1, 5.0, ok=False)]
    result = {"runs": runs, "per_load": {"1": {}}}
    assert cpu_busy_means(result, "1", "stock")["api_server"] == pytest.approx(0.5)
    assert cpu_busy_means(result, "1", "prepack")["api_server"] == pytest.approx(0.9)
    assert _cpu_line(result).endswith("1x API server 0.50 / 0.90, engine processes 1.00 / "
                                      "1.00, client 0.50 / 0.50.\n")
    assert _cpu_line({"runs": [{**r, "cpu_busy": None} for r in runs],
                      "per_load": {"1": {}}}) == ""  # results made before it was recorded


def test_host_record_reads_quota_and_probe_and_the_section_names_them():
    from benchmarks import harness
    from benchmarks.serve_report import _setup_words

    assert harness.cgroup_cpus("400000 100000") == 4.0
    assert harness.cgroup_cpus("max 100000") is None
    assert harness.cgroup_cpus(None) is None
    host = harness.host()
    assert host["usable_cpus"] >= 1 and host["probe_ms"] > 0
    assert host["cgroup_cpus"] == harness.cgroup_cpus(host["cgroup_cpu_max"])
    assert "host" in harness.environment()
    result = {"warmup_requests": 8, "host": {"cpu_model": "EPYC 9654", "usable_cpus": 16,
                                             "cgroup_cpus": 4.0, "load_1m": 3.5,
                                             "probe_ms": 12.0}}
    assert _setup_words(result) == (
        " Warm-up per server start: 8 requests. Host CPU: EPYC 9654, 16 usable, cgroup quota 4"
        " CPUs, load 3.5 at start, one-core probe 12.0 ms.")
    assert _setup_words({}) == ""  # results that predate the record


def test_an_aa_result_runs_a_second_stock_server_and_says_so():
    """A/A (``--aa``): the second arm's server is started as stock's (no ``--scheduler``), must
    build stock's scheduler class, writes no packing statistics, and reports and plots name it
    ``stock B``; an A/B's second arm is the prepack scheduler."""
    import dataclasses
    from pathlib import Path

    from benchmarks import serve_pool
    from benchmarks.serve_options import ServeOptions
    from benchmarks.serve_report import RATIO_METRICS, aggregate, render_section

    aa = ServeOptions(model="m", serve_args="--max-num-batched-tokens 2048",
                      prepack_args="--prepack-stretch 4", aa=True)
    ab = dataclasses.replace(aa, aa=False)
    stats = Path("s.jsonl")
    second = serve_pool.serve_args("prepack", aa, None, stats)
    assert second == serve_pool.serve_args("stock", aa, None, stats)
    assert "--scheduler" not in second and "--prepack-stretch" not in second
    assert serve_pool.serve_args("prepack", ab, None, stats)[-6:] == [
        "--scheduler", "prepack", "--prepack-stretch", "4", "--prepack-stats-path", "s.jsonl"]
    assert serve_pool.expected_classes("prepack", aa) == serve_pool.EXPECTED_CLASSES["stock"]
    assert serve_pool.expected_classes("prepack", ab) == serve_pool.EXPECTED_CLASSES["prepack"]
    assert serve_pool.expected_classes("stock", ab) == serve_pool.EXPECTED_CLASSES["stock"]
    assert serve_pool.runs_prepack("prepack", ab) and not serve_pool.runs_prepack("prepack", aa)
    assert not serve_pool.runs_prepack("stock", ab)

    bench = {m: 10.0 for m in [*RATIO_METRICS, "total_token_throughput"]}
    busy = {"api_server": 0.5, "engine": 1.0, "client": 0.5}
    runs = [{"arm": arm, "rep": 0, "load_factor": 1.0, "ok": True, "bench": bench,
             "cpu_busy": busy, "metrics": {"server_queue_mean_ms": 2.0,
                                           "server_prefill_mean_ms": 3.0}}
            for arm in serve_pool.ARMS]
    cls = "vllm.v1.core.sched.async_scheduler.AsyncScheduler"
    result = {"aa": True, "workload": {"name": "lognormal", "n": 2, "padding_ratio": 2.0,
                                       "output_len": 32},
              "slo": {"ttft_ms": 100.0, "source": "fixed"},
              "saturation": {"request_throughput": 10.0}, "model_shape": "tiny",
              "arms": {arm: {"scheduler_class": cls} for arm in serve_pool.ARMS},
              "device": "GPU: X", "vllm": "0.33.0", "git_commit": "abc", "repetitions": 1,
              "rates": {"1": 10.0}, "runs": runs, "per_load": aggregate(runs, [1.0], 1)}
    text = render_section(result)
    assert text.startswith("#### Serving A/A, tiny")
    assert "stock: `AsyncScheduler`, stock B: `AsyncScheduler`" in text
    assert "| 1x | 10.00 | stock B | 10.00 |" in text and "prepack" not in text
    assert "CPU seconds per wall second of a run, stock / stock B (1.00" in text
    assert "The engine's part (engine queue + prefill), stock B vs stock: 1x 1.00" in text
    assert serve_pool.arm_label(result, "prepack") == "stock B"
    assert serve_pool.arm_label({**result, "aa": False}, "prepack") == "prepack"
    assert render_section({**result, "aa": False}).startswith("#### Serving A/B, tiny")
    from benchmarks import report

    fig = report.pyplot().figure(figsize=(3, 3))  # one narrow panel: the title wraps
    report.suptitle(fig, f"Serving {serve_pool.comparison(result)}, TTFT SLO 100 ms",
                    {**result, "device": "GPU: NVIDIA H100 80GB HBM3 x1"})
    title = fig._suptitle.get_text()
    assert title.startswith("Serving A/A, TTFT SLO 100 ms: tiny") and "(GPU: NVIDIA H100" in title
    assert max(len(line) for line in title.splitlines()) <= 3 * 13
    report.suptitle(fig, f"Serving {serve_pool.comparison({**result, 'aa': False})}",
                    {**result, "aa": False})
    assert fig._suptitle.get_text() == "Serving A/B: tiny\n(GPU: X)"


def test_servers_start_in_the_first_server_order(capsys):
    from benchmarks import serve_ab
    from benchmarks.serve_options import parse

    class Pool:
        one_at_a_time = False

        def __init__(self):
            self.calls = []

        def get(self, arm):
            self.calls.append(arm)

    for first, order in (("prepack", ["prepack", "stock"]), ("stock", ["stock", "prepack"])):
        pool = Pool()
        serve_ab.start_servers(pool, first)
        assert pool.calls == order
    pool = Pool()
    pool.one_at_a_time = True  # the servers take turns: each starts when its run comes
    serve_ab.start_servers(pool, "stock")
    assert pool.calls == []
    argv = ["--model", "m", "--first-server"]
    assert parse([*argv, "stock"], None).first_server == "stock"
    assert parse(argv[:2], None).first_server == "prepack"
    with pytest.raises(SystemExit):
        parse([*argv, "both"], None)
    assert "invalid choice: 'both' (choose from" in capsys.readouterr().err


def test_the_estimate_counts_what_is_left_once_the_servers_are_up(capsys):
    from types import SimpleNamespace

    from benchmarks import serve_drive
    from benchmarks.serve_options import parse

    opts = parse(["--model", "m", "--n", "300", "--load-factors", "1.0", "--reps", "3",
                  "--warmup-replay"], None)
    pool = SimpleNamespace(one_at_a_time=False, starts={
        "stock": [{"ready_s": 102.0, "warmup_s": 0.5}],
        "prepack": [{"ready_s": 133.0, "warmup_s": 0.5}]})
    serve_drive.print_estimates(opts, 20.0, 2.0, pool)  # a run: 300 / 20 + 2 = 17 s
    out = capsys.readouterr().out
    # 3 pairs of two runs and one warm-up replay a server; no start left
    assert "per run (s): 1x 17; estimate for the rest: 136s (both servers up: stock started " \
        "in 102s, prepack started in 133s)" in out
    pool.one_at_a_time = True  # the servers take turns: the stock server's start a pair
    serve_drive.print_estimates(opts, 20.0, 2.0, pool)
    assert "estimate for the rest: 444s (3 server start(s) of ~102s)" in capsys.readouterr().out
