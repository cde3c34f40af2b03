"""The trace simulator's step-time model: seconds of one engine step from its features
(prefill tokens, decode requests, attention context), fitted to GPU step timings."""

from __future__ import annotations

from dataclasses import dataclass

from vllm.v1.core.sched.scheduler import Scheduler


@dataclass(frozen=True)
class StepModel:
    """Seconds of one engine step on the GPU: the larger of the launch time ``base +
    per_token * prefill tokens + per_decode * decode requests + per_attn * sum(chunk *
    (context + chunk / 2)) / 1e6 + per_ctx * decode context tokens / 1e6`` and the compute
    time ``gpu_base + gpu_per_token * (prefill tokens + decode requests)``. Eager, the host
    launches every layer's kernels one by one while the GPU runs them: a small step takes the
    launch time, a large prefill its compute (``gpu_*`` 0: launch time only)."""

    base: float
    per_token: float
    per_decode: float
    per_attn: float = 0.0
    per_ctx: float = 0.0
    gpu_base: float = 0.0
    gpu_per_token: float = 0.0

    def seconds(self, f: dict) -> float:
        launch = (self.base + self.per_token * f["prefill_tokens"]
                  + self.per_decode * f["decodes"] + self.per_attn * f["attn"] / 1e6
                  + self.per_ctx * f["decode_ctx"] / 1e6)
        return max(launch, self.gpu_base
                   + self.gpu_per_token * (f["prefill_tokens"] + f["decodes"]))


STEP_MODELS = {
    # Fitted by fit_step_model() to benchmarks/results/trace_llm_8b_b2048_4x_h200_steps.json
    # (H200, eager, bf16, vLLM 0.32.0, async scheduling): each step's time against its features.
    # The 0.33.0 steps (trace_llm_8b_b2048_1.0sat_h200_vllm033_steps.json) give the same
    # compute time per token (19.5 us, about 720 TFLOPS).
    "llama-3.1-8b": StepModel(base=0.0166, per_token=0.0, per_decode=5.51e-5,
                              gpu_base=0.0028, gpu_per_token=1.94e-5),
    # Llama-3.2-1B: the 8B fit scaled by the ratio of their weights (1.24B / 8.03B) above the
    # eager launch floor; not fitted to a GPU run.
    "llama-3.2-1b": StepModel(base=0.0090, per_token=0.0, per_decode=0.85e-5,
                              gpu_base=0.00043, gpu_per_token=0.30e-5),
}
STEP_NOISE = 0.25
"""``fit_step_model``'s ``log_residual_sd`` on the 8B steps: the spread of measured step times
around the model (an upper bound on step-to-step noise; part of it is the model's own error,
correlated from one step to the next)."""
CPU_SCALE = 1.6
"""Scheduler CPU time on the H200 host over this machine's, for the same steps (the steps
file's ``sched_cpu_s`` + ``update_s`` against :func:`simulate`'s measurement)."""


@dataclass(frozen=True)
class HostModel:
    """Seconds of scheduler CPU time of one step on this machine (``schedule()`` plus
    ``update_from_output()``): ``base + per_scheduled * requests in the step + per_new *
    requests admitted by the step`` (an admission looks up and allocates the prompt's KV
    blocks). Running requests are left out: nearly all of them are scheduled every step, so
    the two counts cannot be told apart."""

    base: float
    per_scheduled: float
    per_new: float

    def seconds(self, scheduled: int, new: int) -> float:
        return max(0.0, self.base + self.per_scheduled * scheduled + self.per_new * new)


HOST_MODEL = HostModel(base=-0.00013987200727091968, per_scheduled=3.5609752365041345e-05,
                       per_new=0.0005161027936560901)
"""Fitted by :func:`fit_host_model` to every arm's steps in
benchmarks/results/trace_sim_host_fit_cpu.json (this CPU machine, vLLM 0.32.0;
``python -m benchmarks.trace_sim --fit-host ...``). One model for every arm: the arms' own
fits differ by less than the same arm's fits from one run to the next on this machine (the
planner's own cost is measured by ``benchmarks.planner_cost``). The simulator's default
(``host="model"``), so that a run is a function of its inputs."""


def fit_host_model(samples: list[tuple[int, int, float]]) -> tuple[HostModel, dict]:
    """Least-squares fit of measured scheduler CPU seconds per step to the scheduled and
    admitted request counts (``samples``: ``(scheduled, new, seconds)``)."""
    import numpy as np

    a = np.asarray(samples, dtype=float)
    coef, fit = _least_squares(a[:, :2], a[:, 2], floor=0.0)
    return HostModel(*coef), fit


def _least_squares(features, y, floor: float | None = None) -> tuple[list[float], dict]:
    """``y ~ c0 + features @ c``: the coefficients and the fit's errors (predictions clipped
    at ``floor`` when given, as the model that uses them clips)."""
    import numpy as np

    x = np.column_stack([np.ones(len(y)), features])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    pred = x @ coef if floor is None else np.maximum(floor, x @ coef)
    return [float(c) for c in coef], {"mean_s": float(y.mean()), **_errors(pred, y)}


def _errors(pred, y) -> dict:
    """A fit's errors: steps, mean absolute error per step, and total time predicted over
    measured, less 1."""
    import numpy as np

    return {"steps": int(len(y)), "mean_abs_error_s": float(np.abs(pred - y).mean()),
            "total_time_error": float(pred.sum() / y.sum() - 1)}


def fit_step_model(steps: dict, skip_reps: tuple[int, ...] = (0,),
                   lag: int = 1) -> tuple[StepModel, dict]:
    """Fit of the step period to the larger of a launch time (linear in decode requests) and
    a compute time (linear in tokens), over every arm and repetition of a ``benchmarks.ab``
    steps file (``*_steps.json``), warm-up repetitions left out: each step is assigned to the
    term that predicts it longer, each term refitted by least squares on its steps, until
    stable. Two starts: compute on the steps of 90% of the largest prefill or more, and on
    those of the median prefill or more (launch on the rest); the second is kept only where
    its error is more than 1% smaller (on a CPU, where a decode request costs more than a
    prompt token, the first can end with every step on compute).

    With async scheduling (vLLM's default) the engine schedules step ``k + 1`` right after it
    has taken step ``k - 1``'s output (``t[k + 1]`` = ``t_out[k - 1]`` in the steps file), so
    the period ``t[k + 1] - t[k]`` is step ``k - 1``'s time: ``lag`` 1 pairs them."""
    import numpy as np

    x, y = step_periods(steps, skip_reps, lag)
    prefill = x[:, 0]
    fits = [_alternate(x, y, prefill >= 0.9 * prefill.max())]
    if (prefill > 0).any():
        fits.append(_alternate(x, y, prefill >= np.median(prefill[prefill > 0])))
    error = [float(np.abs(pred - y).mean()) for *_, pred, _ in fits]
    h, g, pred, on_gpu = fits[-1] if error[-1] < 0.99 * error[0] else fits[0]
    model = StepModel(base=float(h[0]), per_token=0.0, per_decode=float(h[1]),
                      gpu_base=float(g[0]), gpu_per_token=float(g[1]))
    return model, {
        "mean_period_s": float(y.mean()), "lag": lag, **_errors(pred, y),
        "compute_bound_share": float(on_gpu.mean()),
        # the spread of log(measured / model) per step: what ``--step-noise`` draws from
        "log_residual_sd": float(np.log(y / pred).std())}


def _alternate(x, y, on_gpu):
    """The launch and compute terms' coefficients fitted alternately from the assignment
    ``on_gpu`` until it is stable, their prediction and the steps on compute."""
    import numpy as np

    launch = np.column_stack([np.ones(len(y)), x[:, 1]])
    compute = np.column_stack([np.ones(len(y)), x[:, 0] + x[:, 1]])
    for _ in range(100):
        h = np.linalg.lstsq(launch[~on_gpu], y[~on_gpu], rcond=None)[0]
        g = np.linalg.lstsq(compute[on_gpu], y[on_gpu], rcond=None)[0]
        pred = np.maximum(launch @ h, compute @ g)
        if np.array_equal(on_gpu, now := compute @ g > launch @ h):
            break
        on_gpu = now
    return h, g, pred, on_gpu


def step_periods(steps: dict, skip_reps: tuple[int, ...] = (), lag: int = 1):
    """Every step of a steps file but the repetitions ``skip_reps``, paired with its period as
    :func:`fit_step_model` pairs them (idle gaps of a second or more between arrivals left out):
    ``(features, periods)``, the features' columns prefill tokens, decode requests and decode
    context (the step's ``ctx`` less its prefill tokens, exact where every prefill is a
    prompt's first chunk; 0 in a file without ``ctx``)."""
    import numpy as np

    xs, ys = [], []
    for arms in steps["steps"].values():
        for runs in arms.values():
            for run in runs:
                if run["rep"] in skip_reps:
                    continue
                period = np.diff(np.asarray(run["t"]))[lag:]
                keep = period < 1.0
                f = [np.asarray(run[c], dtype=float)[:len(period)]
                     for c in ("prefill", "decode_reqs")]
                ctx = np.asarray(run.get("ctx", f[0]), dtype=float)[:len(period)]
                f.append(np.maximum(ctx - f[0], 0.0))
                xs.append(np.stack(f, 1)[keep])
                ys.append(period[keep])
    return np.concatenate(xs), np.concatenate(ys)


DECODE_BINS = (0, 40, 80, 120, 160, 200)


def step_model_check(steps: dict, model: StepModel, lag: int = 1) -> dict:
    """``model`` against every step of a steps file (:func:`step_periods`): predicted over
    measured time in total, and the mean measured and predicted step (ms) by decode batch
    (:data:`DECODE_BINS`), for decode-only steps and for steps with prompt tokens (the
    prefill attention term is left at 0)."""
    import numpy as np

    x, y = step_periods(steps, (), lag)
    pred = np.array([model.seconds({"prefill_tokens": p, "decodes": d, "attn": 0.0,
                                    "decode_ctx": c}) for p, d, c in x])
    bins = []
    for lo, hi in zip(DECODE_BINS, DECODE_BINS[1:] + (np.inf,)):
        for prompt in (False, True):
            sel = (x[:, 1] >= lo) & (x[:, 1] < hi) & ((x[:, 0] > 0) == prompt)
            if sel.any():
                bins.append({"decodes": f"{lo}-{hi - 1}" if hi < np.inf else f">={lo}",
                             "prompt_tokens": prompt, "steps": int(sel.sum()),
                             "measured_ms": float(1e3 * y[sel].mean()),
                             "model_ms": float(1e3 * pred[sel].mean())})
    return {"steps": int(len(y)), "model_over_measured": float(pred.sum() / y.sum()),
            "bins": bins}


def step_features(scheduler: Scheduler, out) -> dict:
    """What the step model reads from one ``SchedulerOutput`` (after vLLM's bookkeeping)."""
    prefill = decodes = 0
    attn = ctx = 0.0
    requests = scheduler.requests
    for req_id, n in out.num_scheduled_tokens.items():
        r = requests[req_id]
        before = r.num_computed_tokens - n
        if before < r.num_prompt_tokens:
            chunk = min(n, r.num_prompt_tokens - before)
            prefill += chunk
            attn += chunk * (before + chunk / 2)
        else:
            decodes += 1
            ctx += before
    return {"prefill_tokens": prefill, "decodes": decodes, "attn": attn, "decode_ctx": ctx}
