"""Step timings for the simulator's step-time model, from either source: a ``benchmarks.ab``
steps file (``*_steps.json``: an in-process engine core timed by :mod:`benchmarks.step_timing`)
or a ``benchmarks.serve_ab`` result whose prepack runs carry the server's own steps
(``step_series``: the plugin's statistics records, one per engine step, with the server's
mode, eager or CUDA graphs). Both come out in the steps file's layout, so that
:func:`benchmarks.trace_sim_model.fit_step_model` fits either.

    python -m benchmarks.step_source benchmarks/results/trace_serve_tiny_replay_1.0_steps_cpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
from collections.abc import Sequence
from pathlib import Path

MIN_STEPS = 50
"""Fewer steps than this in a result's step series are not fitted for its report."""


def serve_steps(result: dict) -> dict:
    """A ``serve_ab`` result's step series as a steps file: one arm (``prepack``), each
    completed run a repetition, cut into segments where the engine may have idled (a step
    whose running requests were all admitted by it carried nothing over from the one before,
    so the time between them may include an idle wait) or a step record is missing. Prompt
    tokens are the step's ``prefill_tokens``; decode requests its other scheduled tokens (one
    each: no speculative decoding in these runs). ``lag``: 1 where the server scheduled
    asynchronously (its scheduler class), so that a period is the time of the step before last
    (:func:`benchmarks.trace_sim_model.fit_step_model`), else 0."""
    segments = []
    for rep, run in enumerate(r for r in result.get("runs", [])
                              if r.get("arm") == "prepack" and r.get("ok")):
        cols = run.get("step_series")
        if not cols or not cols["step"]:
            continue
        start = 0
        for i in range(1, len(cols["step"]) + 1):
            if i == len(cols["step"]) or (cols["running"][i] == cols["admitted"][i]
                                          or cols["step"][i] != cols["step"][i - 1] + 1):
                segments.append(_segment(cols, start, i, rep))
                start = i
    return {"steps": {"serve": {"prepack": segments}}, "lag": int(scheduled_async(result))}


def scheduled_async(result: dict) -> bool:
    """Whether a ``serve_ab`` result's prepack server scheduled asynchronously (its scheduler
    class; one that did not record it: yes, vLLM's default on a GPU)."""
    cls = (result.get("arms") or {}).get("prepack", {}).get("scheduler_class")
    return cls is None or "Async" in cls


def _segment(cols: dict, a: int, b: int, rep: int) -> dict:
    prefill = cols["prefill_tokens"][a:b]
    return {"rep": rep, "t": cols["time"][a:b], "prefill": prefill,
            "decode_reqs": [s - p for s, p in zip(cols["scheduled_tokens"][a:b], prefill)]}


def load_steps(paths: Sequence[str | Path], warmup: bool = False) -> dict:
    """Every step of ``paths`` (steps files and ``serve_ab`` results alike) in one steps dict,
    a steps file's warm-up repetition (rep 0) left out unless ``warmup`` (a ``serve_ab``
    result's runs are all measured ones), with the one scheduling lag they share (``lag``: a
    steps file's is 1, its engine scheduled asynchronously); a file that is neither, or files of
    both lags, are an error naming them."""
    merged: dict = {"steps": {}}
    lags = set()
    for p in paths:
        d = json.loads(Path(p).read_text())
        if "runs" in d and "steps" not in d:
            d = serve_steps(d)
        elif not isinstance(d.get("steps"), dict):
            raise ValueError(f"{p}: neither a benchmarks.ab steps file (a 'steps' mapping) nor a "
                             "benchmarks.serve_ab result (a 'runs' list)")
        elif not warmup:
            d = {"steps": {pt: {arm: [r for r in runs if r["rep"] != 0]
                                for arm, runs in arms.items()}
                           for pt, arms in d["steps"].items()}}
        lags.add(d.get("lag", 1))  # a steps file: async scheduling, vLLM's default on GPU
        for point, arms in d["steps"].items():
            merged["steps"][f"{Path(p).name}:{point}"] = arms
    if len(lags) > 1:
        raise ValueError(f"{[str(p) for p in paths]}: steps of synchronous and asynchronous "
                         "scheduling; fit them apart")
    merged["lag"] = lags.pop() if lags else 1
    if not any(run for arms in merged["steps"].values() for runs in arms.values()
               for run in runs):
        raise ValueError(f"{[str(p) for p in paths]}: no step timings (a serve_ab result "
                         "records them from the prepack arm's statistics file, step_series)")
    return merged


@functools.lru_cache(maxsize=8)
def fitted(paths: tuple[str, ...]) -> tuple:
    """The step model fitted to the measured steps of ``paths`` (:func:`load_steps`), and the
    fit's record (its files and errors), as :func:`benchmarks.trace_sim_model.fit_step_model`
    fits a steps file."""
    model, fit = _fit(load_steps(paths))
    return model, {"files": [Path(p).name for p in paths], **fit}


def _fit(steps: dict) -> tuple:
    """:func:`benchmarks.trace_sim_model.fit_step_model` on every step, at ``steps``' lag."""
    from benchmarks.trace_sim_model import fit_step_model

    return fit_step_model(steps, skip_reps=(), lag=steps["lag"])


def describe(result: dict) -> str:
    """A sentence on the step model fitted to a ``serve_ab`` result's own steps ("" without
    step series), for its section of docs/results.md."""
    steps = serve_steps(result)
    if sum(len(s["t"]) for s in steps["steps"]["serve"]["prepack"]) < MIN_STEPS:
        return ""
    m, fit = _fit(steps)
    return (f"The prepack server's own steps, fitted (`benchmarks/step_source.py`, {fit['steps']} "
            f"steps): launch {1e3 * m.base:.1f} ms + {1e6 * m.per_decode:.1f} us per decode "
            f"request, compute {1e3 * m.gpu_base:.1f} ms + {1e6 * m.gpu_per_token:.1f} us per "
            f"token, mean error {1e3 * fit['mean_abs_error_s']:.1f} ms per step.")


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", help="steps files or serve_ab results")
    p.add_argument("--out", help="also write the fit here, with the run record")
    args = p.parse_args(argv)
    model, fit = fitted(tuple(args.files))
    out = {"step_model": dataclasses.asdict(model), "fit": fit}
    print(json.dumps(out, indent=1))
    if args.out:
        from benchmarks import harness

        harness.write_json(args.out, {"benchmark": "step-time model fit",
                                      **harness.environment(), **out})
    return out


if __name__ == "__main__":
    main()
