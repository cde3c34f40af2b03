"""CPU accounting of a serving run (benchmarks/serve_cpu.py): CPU seconds of a process and of
its child processes, and each part's share of a run's wall time."""

from __future__ import annotations

import os
import subprocess
import sys
import time

BUSY_CHILD = ("import time\nt = time.process_time()\n"
              "while time.process_time() - t < 0.3:\n    pass\ntime.sleep(60)\n")


def test_cpu_seconds_split_a_process_from_its_children():
    import psutil

    from benchmarks.serve_cpu import cpu_seconds

    child = subprocess.Popen([sys.executable, "-c", BUSY_CHILD])
    try:
        deadline = time.monotonic() + 30
        while sum(psutil.Process(child.pid).cpu_times()[:2]) < 0.3 \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        got = cpu_seconds(os.getpid())
        assert got["engine"] >= 0.3  # the child's busy loop counts as the tree's children
        assert got["api_server"] >= time.process_time() * 0.5  # this process's own
    finally:
        child.kill()
        child.wait()
    assert cpu_seconds(child.pid) == {}  # gone: nothing to read


def test_cpu_busy_is_cpu_seconds_per_wall_second():
    from benchmarks.serve_cpu import cpu_busy

    before, after = {"api_server": 1.0, "engine": 2.0}, {"api_server": 3.0, "engine": 2.5}
    assert cpu_busy(before, after, 4.0, 4.0) == {"api_server": 0.5, "engine": 0.125,
                                                 "client": 1.0}
    assert cpu_busy({}, after, None, 4.0) == {}  # the server's tree was not readable
    assert cpu_busy(before, after, 1.0, 0.0) == {}
