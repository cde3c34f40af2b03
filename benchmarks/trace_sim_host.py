"""The simulator's host model fitted on this machine: every arm's measured scheduler CPU time
per step (``schedule()`` plus ``update_from_output()``) over a grid's budgets and loads, on
the first seed's window (``python -m benchmarks.trace_sim --fit-host ...``)."""

from __future__ import annotations

import dataclasses

from benchmarks import harness
from benchmarks.trace_sim_drive import compressed, saturation, simulate, window_requests
from benchmarks.trace_sim_model import fit_host_model
from benchmarks.trace_sim_options import SimOptions, engine_settings


def fit_hosts(opts: SimOptions, bar) -> dict:
    """The :class:`HostModel` fitted to every arm's measured scheduler CPU time per step over
    the grid's budgets and loads (the first seed's window), and each arm's own fit."""
    from benchmarks import trace

    window = window_requests(trace.load(opts.trace, start=opts.start, n=opts.n,
                                        max_model_len=opts.max_model_len))
    samples: dict[str, list] = {arm: [] for arm in opts.arms}
    for budget in opts.budgets:
        kw = engine_settings(opts, budget, host="measured", seed=opts.seeds[0])
        sat = saturation(window, **kw)
        for load in opts.loads:
            for arm in opts.arms:
                bar.set_postfix(budget=budget, load=load, arm=arm)
                simulate(arm, compressed(window, load * sat), samples=samples[arm], **kw)
                bar.update()
    fits = {arm: fit_host_model(s) for arm, s in samples.items()}
    fits["all"] = fit_host_model([x for s in samples.values() for x in s])
    return {arm: {"model": dataclasses.asdict(m), "fit": f} for arm, (m, f) in fits.items()}


def run_host_fit(opts: SimOptions) -> dict:
    """The host model's fit, printed; its result JSON (written to ``opts.out``)."""
    from tqdm import tqdm

    from benchmarks import trace

    with tqdm(total=len(opts.budgets) * len(opts.loads) * len(opts.arms),
              desc="host fit", unit="run") as bar:
        fits = fit_hosts(opts, bar)
    for arm, f in fits.items():
        print(f"{arm:>8}: " + "  ".join(f"{k} {v * 1e6:.1f} us" for k, v in f["model"].items())
              + f"  (mean {f['fit']['mean_s'] * 1e3:.2f} ms per step, "
              f"mean abs error {f['fit']['mean_abs_error_s'] * 1e3:.2f} ms)")
    result = {"benchmark": "trace simulator: scheduler CPU time per step, fitted (CPU)",
              **harness.environment(), "shape": opts.shape, "n": opts.n, "start": opts.start,
              "budgets": list(opts.budgets), "loads": list(opts.loads),
              "max_num_seqs": opts.max_num_seqs, "arms": list(opts.arms),
              "workload": {"trace": trace.ATTRIBUTION},
              "host_model": fits.pop("all"), "per_arm": fits}
    if opts.out:
        harness.write_json(opts.out, result)
        print("wrote", opts.out)
    return result
