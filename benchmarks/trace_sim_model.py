"""The trace simulator's step-time model: seconds of one engine step from its features
(prefill tokens, decode requests, attention context), fitted to GPU step timings."""

from __future__ import annotations

from dataclasses import dataclass

from vllm.v1.core.sched.scheduler import Scheduler


@dataclass(frozen=True)
class StepModel:
    """Seconds of one engine step on the GPU: ``base + per_token * prefill tokens +
    per_decode * decode requests + per_attn * sum(chunk * (context + chunk / 2)) / 1e6 +
    per_ctx * decode context tokens / 1e6``."""

    base: float
    per_token: float
    per_decode: float
    per_attn: float = 0.0
    per_ctx: float = 0.0

    def seconds(self, f: dict) -> float:
        return (self.base + self.per_token * f["prefill_tokens"]
                + self.per_decode * f["decodes"] + self.per_attn * f["attn"] / 1e6
                + self.per_ctx * f["decode_ctx"] / 1e6)


STEP_MODELS = {
    # Fitted by fit_step_model() to benchmarks/results/trace_llm_8b_b2048_4x_h200_steps.json
    # (H200, eager, bf16, vLLM 0.32.0, async scheduling): step period against its features.
    "llama-3.1-8b": StepModel(base=0.0167, per_token=4.95e-6, per_decode=5.96e-5),
    # Llama-3.2-1B: the 8B fit scaled by the ratio of their weights (1.24B / 8.03B) above the
    # eager launch floor; not fitted to a GPU run.
    "llama-3.2-1b": StepModel(base=0.0090, per_token=0.77e-6, per_decode=0.92e-5),
}
CPU_SCALE = 1.6
"""Scheduler CPU time on the H200 host over this machine's, for the same steps (the steps
file's ``sched_cpu_s`` + ``update_s`` against :func:`simulate`'s measurement)."""


def fit_step_model(steps: dict, skip_reps: tuple[int, ...] = (0,)) -> tuple[StepModel, dict]:
    """Least-squares fit of the step period (gap between consecutive ``schedule()`` calls)
    to prefill tokens, decode requests and context, over every arm and repetition of a
    ``benchmarks.ab`` steps file (``*_steps.json``), warm-up repetitions left out."""
    import numpy as np

    xs, ys = [], []
    for arms in steps["steps"].values():
        for runs in arms.values():
            for run in runs:
                if run["rep"] in skip_reps:
                    continue
                t = np.asarray(run["t"])
                period = np.diff(t)
                keep = period < 1.0  # idle gaps between arrivals are not steps
                f = [np.asarray(run[c][:-1], dtype=float) for c in ("prefill", "decode_reqs")]
                x = np.stack([np.ones_like(period), f[0], f[1]], 1)[keep]
                xs.append(x)
                ys.append(period[keep])
    x, y = np.concatenate(xs), np.concatenate(ys)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    pred = x @ coef
    model = StepModel(base=float(coef[0]), per_token=float(coef[1]),
                      per_decode=float(coef[2]))
    fit = {"steps": int(len(y)), "mean_period_s": float(y.mean()),
           "mean_abs_error_s": float(np.abs(pred - y).mean()),
           "total_time_error": float(pred.sum() / y.sum() - 1)}
    return model, fit


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
