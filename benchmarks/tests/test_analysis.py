"""The verdict rule: a paired t-test on log-ratios, not 'every repetition on one side'."""

from benchmarks import analysis


def _ratio(values):
    return analysis.paired_ratio(values, [1.0] * len(values), higher_is_better=False)


def test_a_wide_spread_on_one_side_of_one_is_a_tie():
    # The spread of two servers making the same admissions (H200, budget 8192): not a claim.
    assert _ratio([0.67, 0.82, 0.96])["verdict"] == "tie"
    assert _ratio([0.58, 0.76])["verdict"] == "tie"


def test_a_tight_spread_is_a_win_or_a_loss():
    assert _ratio([0.50, 0.52])["verdict"] == "win"
    assert _ratio([1.24, 1.28])["verdict"] == "loss"
    assert analysis.paired_ratio([1.3, 1.31, 1.29], [1.0] * 3, higher_is_better=True)[
        "verdict"] == "win"


def test_spread_crossing_one_and_identical_runs_are_ties():
    assert _ratio([0.9, 1.1, 1.0])["verdict"] == "tie"
    assert _ratio([1.0, 1.0])["verdict"] == "tie"


def test_one_repetition_is_a_single_run_and_identical_shifts_count():
    assert _ratio([0.5])["verdict"] == "single run"
    assert _ratio([0.8, 0.8, 0.8])["verdict"] == "win"


def test_a_zero_ratio_keeps_the_spread_rule():
    r = analysis.paired_ratio([0.0, 0.5], [1.0, 1.0], higher_is_better=True)
    assert "log_sd" not in r and r["verdict"] == "loss"


def test_older_ratios_without_log_statistics_keep_their_rule():
    assert analysis.verdict({"n": 2, "min": 0.58, "max": 0.76}, False) == "win"
    assert analysis.verdict({"n": 2, "min": 0.9, "max": 1.1}, False) == "tie"


def test_a_ratio_against_its_a_a_floor():
    floor = _ratio([0.98, 1.02, 1.0])
    assert analysis.against_floor(_ratio([1.3, 1.35, 1.32]), floor, False) == "loss"
    assert analysis.against_floor(_ratio([0.7, 0.72, 0.71]), floor, False) == "win"
    # The same shift in the floor itself (two stock servers differ by it): within the floor.
    assert analysis.against_floor(_ratio([1.3, 1.35, 1.32]), _ratio([1.3, 1.34, 1.31]),
                                  False) == "tie"
    # A tight ratio against a wide floor is not told apart from it.
    assert analysis.against_floor(_ratio([0.8, 0.81]), _ratio([0.5, 1.6, 1.0]), False) == "tie"
    goodput = analysis.paired_ratio([0.9, 0.91, 0.9], [1.0] * 3, higher_is_better=True)
    assert analysis.against_floor(goodput, floor, True) == "loss"


def test_a_floor_or_ratio_without_two_repetitions_decides_nothing():
    assert analysis.against_floor(_ratio([1.5]), _ratio([1.0, 1.01]), False) == "-"
    assert analysis.against_floor(_ratio([1.5, 1.6]), None, False) == "-"
    assert analysis.against_floor(None, _ratio([1.0, 1.01]), False) == "-"
    # No spread on either side: any difference in the logs decides.
    assert analysis.against_floor(_ratio([0.8, 0.8]), _ratio([1.0, 1.0]), False) == "win"
    assert analysis.against_floor(_ratio([1.0, 1.0]), _ratio([1.0, 1.0]), False) == "tie"
