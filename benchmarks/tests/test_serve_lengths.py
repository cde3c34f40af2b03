"""TTFT by prompt length: length classes, per-class paired ratios, the requests that cross the
SLO in one arm only, prompt lengths from the result or from the trace file, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import serve_lengths

LENS = [100, 300, 1000, 3000]  # two short, one middle, one long prompt


def run(arm, rep, ttfts, lf=1.0):
    return {"arm": arm, "rep": rep, "load_factor": lf, "ok": True,
            "bench": {"ttfts_s": ttfts, "mean_ttft_ms": 1e3 * sum(ttfts) / len(ttfts)}}


def result(runs, lens=LENS, commit="abc", **workload):
    args = [".models/m", "--max-num-batched-tokens", "2048"]
    return {"device": "GPU: X", "vllm": "0.33.0", "git_commit": commit, "model_shape": "8b",
            "arms": {"stock": {"serve_args": args},
                     "prepack": {"serve_args": [*args, "--scheduler", "prepack"]}},
            "workload": {"source": "t.csv", "start": 0, "n": len(lens), "arrival": "trace",
                         "description": "t.csv requests 0..3", "prompt_lens": lens, **workload},
            "rates": {"1": 10.0}, "warmup_replay": True, "per_load": {"1": {}},
            "slo": {"ttft_ms": 2000.0}, "runs": runs}


def test_classes_split_at_the_bounds_and_bad_bounds_are_named():
    assert serve_lengths.classes([512, 2048]) == [(0, 512), (512, 2048), (2048, None)]
    assert [serve_lengths.label(*c) for c in serve_lengths.classes([512, 2048])] == [
        "< 512", "512-2047", ">= 2048"]
    for bad in ([], [2048, 512], [0, 10], [512, 512]):
        with pytest.raises(ValueError, match=r"bounds must be increasing.*" + str(list(bad))
                           .replace("[", r"\[").replace("]", r"\]")):
            serve_lengths.classes(bad)


def test_class_means_are_in_class_order_without_empty_classes():
    means = serve_lengths.class_means([4.0, 1.0, 3.0], [3000, 100, 300])
    assert list(means.items()) == [("< 512", 2.0), (">= 2048", 4.0)]
    assert serve_lengths.class_of(512) == "512-2047" and serve_lengths.class_of(511) == "< 512"
    with pytest.raises(ValueError, match="2 values for 3 requests"):
        serve_lengths.class_means([1.0, 2.0], [1, 2, 3])


def test_short_prompts_sooner_long_later_and_the_slo_crossings():
    # prepack halves the short prompts' TTFT and pushes the long one past the 2 s SLO; in rep 1
    # the middle prompt meets the SLO only under prepack
    runs = [run("stock", 0, [1.0, 1.0, 1.5, 1.9]), run("prepack", 0, [0.5, 0.5, 1.5, 2.5]),
            run("stock", 1, [1.0, 1.0, 2.2, 1.8]), run("prepack", 1, [0.5, 0.5, 1.9, 2.1])]
    [pt] = serve_lengths.points([(Path("a.json"), result(runs))], None, [512, 2048])
    by = {c["class"]: c for c in pt["classes"]}
    assert pt["pairs"] == 2 and pt["load"] == 1.0 and pt["files"] == ["a.json"]
    assert by["< 512"]["requests"] == 2 and by["< 512"]["ratio"]["median"] == pytest.approx(0.5)
    assert by["< 512"]["stock_ms"] == pytest.approx(1000.0)
    assert by["512-2047"]["ratio"]["min"] == pytest.approx(1.9 / 2.2)
    assert by[">= 2048"]["ratio"]["mean"] == pytest.approx((2.5 / 1.9 + 2.1 / 1.8) / 2)
    assert pt["slo_missed_by_prepack_only"]["mean"] == 1.0
    assert pt["slo_missed_by_stock_only"]["min"] == 0 and pt["slo_missed_by_stock_only"]["max"] == 1
    assert pt["crossing"]["prepack_only"] == [{"request": 3, "prompt_tokens": 3000, "pairs": 2}]
    assert pt["crossing"]["stock_only"] == [{"request": 2, "prompt_tokens": 1000, "pairs": 1}]


def test_the_requests_entering_the_slowest_percent_in_one_arm_only():
    # 150 requests: the slowest 1% is 2; prepack moves request 7 into it and 140 out of it
    stock = [0.1] * 150
    stock[140], stock[141] = 0.9, 0.8
    prepack = list(stock)
    prepack[7], prepack[140] = 0.85, 0.2
    lens = [100 + i for i in range(150)]
    both = [(run("stock", r, stock), run("prepack", r, prepack)) for r in range(2)]
    assert serve_lengths.slowest(stock) == {140, 141} and serve_lengths.slowest([1.0]) == {0}
    pt = serve_lengths.point(both, lens, [512], 2000.0)
    assert pt["slowest_1pct"]["prepack_only"] == [{"request": 7, "prompt_tokens": 107, "pairs": 2}]
    assert pt["slowest_1pct"]["stock_only"] == [{"request": 140, "prompt_tokens": 240, "pairs": 2}]
    lines = serve_lengths.section(Path("s.json"), {"bounds": [512], "points": [
        {**pt, "files": ["a.json"], "device": "GPU: X", "git_commit": "abc", "load": 1.0}]})
    assert pt["delayed_most"][0] == {"request": 7, "prompt_tokens": 107,
                                     "delay_ms": pytest.approx(750.0),
                                     "stock_ms": pytest.approx(100.0)}
    assert [e["request"] for e in pt["delayed_most"]] == [7, 0, 1]  # then no delay, by request
    assert pt["sped_up_most"][0] == {"request": 140, "prompt_tokens": 240,
                                     "delay_ms": pytest.approx(-700.0),
                                     "stock_ms": pytest.approx(900.0)}
    assert lines[6].endswith("| 7 (107): 2 | 7 (107): +750 of 100, 0 (100): +0 of 100, "
                             "1 (101): +0 of 100 | 140 (240): -700 of 900, 0 (100): +0 of 100, "
                             "1 (101): +0 of 100 |")


def test_pairs_of_one_point_pool_over_results_and_other_points_do_not():
    a = result([run("stock", 0, [1.0] * 4), run("prepack", 0, [0.5] * 4)])
    b = result([run("stock", 0, [1.0] * 4), run("prepack", 0, [2.0] * 4)])
    c = result([run("stock", 0, [1.0] * 4), run("prepack", 0, [1.0] * 4)], commit="def")
    pts = serve_lengths.points([(Path("a.json"), a), (Path("b.json"), b), (Path("c.json"), c)],
                               None)
    assert [(p["files"], p["pairs"]) for p in pts] == [(["a.json", "b.json"], 2), (["c.json"], 1)]


def test_a_run_of_another_window_is_refused():
    runs = [run("stock", 0, [1.0] * 3), run("prepack", 0, [1.0] * 3)]
    with pytest.raises(ValueError, match="do not match the window's 4 requests"):
        serve_lengths.points([(Path("a.json"), result(runs))], None)


def test_lengths_from_the_trace_file_when_the_result_has_none(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                   + "".join(f"{i}.0,{n},8\n" for i, n in enumerate([7, *LENS])))
    r = result([], lens=[], start=1, n=len(LENS), total_tokens=sum(LENS))
    assert serve_lengths.prompt_lens(r, str(csv)) == LENS
    r["workload"]["total_tokens"] += 1
    with pytest.raises(ValueError, match="is not the window the result ran"):
        serve_lengths.prompt_lens(r, str(csv))


def test_cli_writes_the_json_and_render_tables_it(tmp_path, capsys):
    runs = [run("stock", 0, [1.0, 1.0, 1.5, 1.9]), run("prepack", 0, [0.5, 0.5, 1.5, 2.5])]
    src = tmp_path / "r.json"
    src.write_text(json.dumps(result(runs)))
    out = tmp_path / "lengths.json"
    d = serve_lengths.main(["--results", str(src), "--bounds", "512,2048", "--out", str(out)])
    assert json.loads(out.read_text())["points"] == json.loads(json.dumps(d["points"]))
    assert d["benchmark"] == serve_lengths.BENCHMARK and "git_commit" in d
    table = "\n".join(serve_lengths.section(out, d))
    assert "| `r.json` | X, abc | 1x | 1 | 0.50 [0.50-0.50] (single run) (2) |" in table
    assert "| 1.0 [1-1] | 0.0 [0-0] |" in table
    with pytest.raises(SystemExit):
        serve_lengths.main(["--results", str(src), "--bounds", "2048,512"])
    assert "--bounds" in capsys.readouterr().err
