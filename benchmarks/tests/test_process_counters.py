"""A process's counters over a stretch of a run: the garbage collector's time and collections,
with one collector callback however many counters a process makes."""

from __future__ import annotations

import gc

from benchmarks import process_counters
from benchmarks.process_counters import ProcessCounters


def test_counters_share_one_gc_callback_and_count_collections():
    first, second = ProcessCounters(), ProcessCounters()
    assert gc.callbacks.count(process_counters._gc_timer) == 1
    garbage = [[i] for i in range(50_000)]
    del garbage
    gc.collect()
    for counters in (first, second):
        out = counters.read()
        assert out["gc_collections"][2] >= 1 and out["gc_s"] > 0
    second.reset()  # the full collection above is before it: not counted again
    assert second.read()["gc_collections"][2] == 0
    assert second.read()["gc_s"] < first.read()["gc_s"]
