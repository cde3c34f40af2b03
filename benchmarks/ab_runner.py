"""The parent side of :mod:`benchmarks.ab`: start one engine process per arm (or per run with
``--isolate``), run every workload's repetitions with the arms in alternating order, keep
the records, and save the JSON after each run."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks import ab_result, ab_trace
from benchmarks.engine_proc import ARMS
from benchmarks.harness import EngineProcess


def check_arms(o) -> list[str]:
    """The arms of ``--arms``: known ones, and with timed arrivals only arrival-order ones."""
    arms = o.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; accepted: {', '.join(ARMS)}")
    reordered = [a for a in arms if ARMS[a][2] != "arrival"]
    if (o.rate or o.workload == "trace") and reordered:
        raise SystemExit(f"arm(s) {reordered} reorder the prompts before submitting them; "
                         "with timed arrivals (--rate, --workload trace) use arms that submit "
                         "in arrival order: "
                         + ", ".join(a for a in ARMS if ARMS[a][2] == "arrival"))
    return arms


class Runner:
    def __init__(self, args, arms: list[str], child_argv: list[str]):
        self.args, self.arms, self.child_argv = args, arms, child_argv
        self.baseline = "stock" if "stock" in arms else arms[0]
        self.workdir = Path(tempfile.mkdtemp(prefix="prepack_ab_"))
        self.started: dict[str, EngineProcess] = {}
        self.infos: dict[str, dict] = {}
        self.reps: dict[str, dict[str, list[dict]]] = {}
        base = ab_trace.trace_base(args) if args.workload == "trace" else None
        self.state: dict = {"base": base, "loads": {}, "saturation": None, "steps": {}}
        if base is None:
            self.mixes = ab_trace.mixes(args)
        else:
            print(ab_trace.describe_window(base), flush=True)
            self.mixes = ([] if args.load_factors else
                          [w for w, _ in ab_trace.trace_loads(args, base, None)])
        for w in self.mixes:
            print(ab_trace.describe_workload(args, w), flush=True)

    def start(self, name: str, tag: str) -> EngineProcess:
        # One at a time: engines measure free memory when they start.
        arm = EngineProcess(name, "benchmarks.ab",
                            [*self.child_argv, "--worker", "--arm", name],
                            self.workdir / tag / name)
        self.infos[name] = arm.wait("ready", self.args.start_timeout)
        return arm

    def run_one(self, name: str, tag: str, cmd: dict) -> dict:
        isolate = self.args.isolate
        arm = self.start(name, tag) if isolate else self.started[name]
        arm.send(cmd)
        t0 = time.monotonic()
        try:
            row = arm.wait(f"{cmd['workload']}-rep{cmd['rep']}", self.args.run_timeout)
            elapsed = time.monotonic() - t0
        finally:
            if isolate:
                arm.stop()
        steps = row.pop("steps", None)
        if steps is not None:
            self.state["steps"].setdefault(cmd["workload"], {}).setdefault(name, []).append(
                {"rep": cmd["rep"], **steps})
        print(f"[{time.strftime('%H:%M:%S')}] {cmd['workload']} rep {cmd['rep']} {name}: "
              f"wall {row['wall_s']:.1f}s (run {elapsed:.1f}s), TTFT mean "
              f"{row['ttft_mean_s'] or 0:.3f}s p99 {row['ttft_p99_s'] or 0:.3f}s, "
              f"{row['output_tokens_per_s']:.0f} out tok/s, {row['engine_steps']} steps",
              flush=True)
        return row

    def trace_loads(self) -> None:
        """The loads of a trace replay; with ``--load-factors``, after the baseline's
        saturation rate (measured, or ``--saturation-rate``)."""
        args, base = self.args, self.state["base"]
        if not args.load_factors:
            self.state["loads"] = {w.name: load
                                   for w, load in ab_trace.trace_loads(args, base, None)}
            return
        measured = None
        if not args.saturation_rate:
            measured = self.run_one(self.baseline, "saturation", {
                "rep": 0, "workload": "trace_saturation", "compression": None})
        self.state["saturation"] = ab_trace.saturation_record(args, self.baseline, measured)
        rate = self.state["saturation"]["requests_per_s"]
        print(f"saturation ({self.baseline}): {rate:.2f} req/s", flush=True)
        for w, load in ab_trace.trace_loads(args, base, rate):
            self.mixes.append(w)
            self.state["loads"][w.name] = load
            print(ab_trace.describe_workload(args, w), flush=True)

    def result(self) -> dict:
        return ab_result.result(self.args, self.arms, self.mixes, self.reps, self.infos,
                                self.state)

    def run(self) -> dict:
        from tqdm import tqdm

        args, arms = self.args, self.arms
        try:
            if not args.isolate:
                self.started = {name: self.start(name, "shared") for name in arms}
            if self.state["base"] is not None:
                self.trace_loads()
            self.reps.update({w.name: {a: [] for a in arms} for w in self.mixes})
            total = args.reps * len(arms) * len(self.mixes)
            with tqdm(total=total, desc="A/B", unit="run") as bar:
                for w in self.mixes:
                    for rep in range(args.reps):
                        self.run_rep(w, rep, bar)
        finally:
            for arm in self.started.values():
                arm.stop()
        return self.result()

    def run_rep(self, w, rep: int, bar) -> None:
        """Every arm once on repetition ``rep`` of ``w``, in alternating order."""
        for name in self.arms if rep % 2 == 0 else self.arms[::-1]:
            self.reps[w.name][name].append(self.run_one(
                name, f"{w.name}-{rep}",
                {"rep": rep, "workload": w.name,
                 "compression": getattr(w, "compression", None)}))
            bar.set_postfix(mix=w.name, arm=name, rep=rep)
            bar.update()
            if self.args.out:  # each run, so a cut-off run keeps what it did
                ab_result.save(self.args, self.result(), self.state)
