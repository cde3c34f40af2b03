"""A/B serving points against their A/A floors: which A/A results are a point's floor and the
verdict against it."""

from __future__ import annotations

from pathlib import Path

from benchmarks import serve_floor
from benchmarks.tests.test_serve_parts import result, run


def aa(runs, rate=15.14):
    out = result(runs, rate=rate)
    out["arms"]["prepack"]["serve_args"] = list(out["arms"]["stock"]["serve_args"])
    out["aa"] = True
    return out


def pairs_of(ratios, base=1000.0):
    return [r for i, x in enumerate(ratios)
            for r in (run("stock", i, base), run("prepack", i, base * x))]


def test_an_a_b_point_is_set_against_the_a_a_runs_of_the_same_point():
    ab = result(pairs_of([1.30, 1.35, 1.32]))
    floors = [aa(pairs_of([0.98, 1.02])), aa(pairs_of([1.0]))]
    named = [(Path("ab.json"), ab), (Path("aa1.json"), floors[0]), (Path("aa2.json"), floors[1])]
    [point] = serve_floor.compared_points(named)
    assert point["files"] == ["ab.json"] and point["floor_files"] == ["aa1.json", "aa2.json"]
    assert (point["pairs"], point["floor_pairs"]) == (3, 3)
    assert point["floor"]["mean_ttft_ms"]["median"] == 1.0
    assert point["against_floor"] == {"mean_ttft_ms": "loss", "p99_ttft_ms": "loss",
                                      "request_goodput": "tie",  # every goodput equal
                                      "engine": "tie"}  # every run's engine part equal
    table = "\n".join(serve_floor.section(named))
    assert "| `ab.json` | `aa1.json`, `aa2.json` | 1x | 3 / 3 | TTFT mean | 1.32 [1.30-1.35] | " \
        "1.00 [0.98-1.02] | **loss** |" in table
    # A floor that shifts as much as the A/B: the A/B is within it.
    shifted = aa(pairs_of([1.29, 1.36, 1.31]))
    [point] = serve_floor.compared_points([(Path("ab.json"), ab), (Path("aa.json"), shifted)])
    assert point["against_floor"]["mean_ttft_ms"] == "tie"


def test_no_floor_from_another_point_and_no_table_without_one():
    ab = result(pairs_of([1.30, 1.35]))
    other_rate = aa(pairs_of([1.0, 1.01]), rate=12.0)
    named = [(Path("ab.json"), ab), (Path("aa.json"), other_rate)]
    assert serve_floor.compared_points(named) == []
    assert serve_floor.section(named) == []
    assert serve_floor.section([(Path("aa.json"), other_rate)]) == []  # a floor, no A/B


def test_a_floor_is_of_one_host_class():
    assert serve_floor.host_class({}) is None  # a result without a host record
    fast, slower, faster = (result(pairs_of([x])) for x in (1.30, 0.70, 1.32))
    floor = aa(pairs_of([1.0, 1.01]))
    for r, probe in ((fast, 15.0), (slower, 17.3), (faster, 8.3), (floor, 18.5)):
        r["host"] = {"probe_ms": probe}
    assert [serve_floor.host_class(r) for r in (fast, slower)] == ["fast", "slower"]
    named = [(Path(f"{n}.json"), r) for n, r in
             (("a", fast), ("b", slower), ("c", faster), ("aa", floor))]
    # One pooled point (the same point on both classes of host); the slower host's floor
    # judges only its part.
    [point] = serve_floor.compared_points(named)
    assert point["files"] == ["b.json"] and point["floor_files"] == ["aa.json"]
    floor["host"] = {"probe_ms": 9.0}  # an A/A on a fast host: the fast part's floor
    [point] = serve_floor.compared_points(named)
    assert point["files"] == ["a.json", "c.json"] and point["pairs"] == 2
