"""The calibration's inputs from an offline trace replay (``benchmarks.ab --workload trace``:
``LLM`` or ``LLMEngine`` in-process, no API server or client, as the simulator runs): each load
given as a multiple of stock's saturation, the GPU's paired ratios there (recomputed from its
runs with the current rules), the prepack arm's decisions, and the simulator on the same window,
budget, sequences, KV cache and scheduling, with a step model fitted to the replay's own steps
file (``*_steps.json``, both arms' steps).

The metrics are the replay's: mean and p99 TTFT and output tokens/s, beside the simulator's
mean and p99 TTFT and throughput.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks import ab_result, harness
from benchmarks.trace_sim_options import SimOptions, arm_name
from vllm_prepack.config import PrepackConfig

BENCHMARK = "offline A/B, trace replay"
METRICS = {"ttft_mean_s": "ttft_mean_s", "ttft_p99_s": "ttft_p99_s",
           "output_tokens_per_s": "throughput_tok_s"}
"""The replay's metric -> the simulator's."""
CONFIG = "vllm_prepack/config.py"
"""Where the options' defaults are."""


def is_offline(result: dict) -> bool:
    return result.get("benchmark") == BENCHMARK


def prepack_arm(result: dict) -> str:
    """The replay's one arm beside its baseline; more than one is an error naming them."""
    arms = [a for a in result["arms"] if a != result["baseline"]]
    if len(arms) != 1:
        raise ValueError(f"{arms}: a calibrated offline replay has one arm beside its baseline "
                         f"{result['baseline']!r}")
    return arms[0]


def gpu_points(result: dict) -> dict[str, dict]:
    """Load (``f"{factor:g}"``) -> the GPU's ratios and the prepack arm's decisions, for each
    workload run at a multiple of stock's saturation with at least one complete pair."""
    arm, base = prepack_arm(result), result["baseline"]
    points = {}
    for w in result["workloads"].values():
        factor = (w.get("load") or {}).get("load_factor")
        ratios = ab_result.aggregate(w["runs"], base)["ratios_vs_" + base].get(arm) or {}
        if factor is None or not ratios:
            continue
        runs = w["runs"][arm]
        points[f"{factor:g}"] = {
            "ratios": {m: ratios.get(m) for m in METRICS},
            "paired_reps": ratios["ttft_mean_s"]["n"],
            "overtakes_per_run": sum(r["overtakes"] for r in runs) / len(runs),
            "split_per_run": sum(r["split_prompts"] for r in runs) / len(runs),
            "max_oldest_wait_s": None,  # not recorded offline
            "preemptions_per_run": None}
    return points


def sim_arm(result: dict) -> str:
    """The simulator arm of the options the prepack arm's engine was given over the defaults,
    which are this checkout's only where the replay's commit has the same
    ``vllm_prepack/config.py`` (else an error naming the commit: it ran other defaults)."""
    ran = harness.git_object(result.get("git_commit"), CONFIG)
    if ran is None or ran != harness.git_object(None, CONFIG):
        raise ValueError(f"commit {result.get('git_commit')}: its {CONFIG} is not this "
                         "checkout's (or git does not know the commit), so the defaults its "
                         "prepack arm ran are not known here")
    extra = result["arms"][prepack_arm(result)]["engine_kwargs"].get("additional_config")
    return arm_name(PrepackConfig.from_additional_config(extra).to_dict())


def sim_options(path: Path, result: dict, loads: list[str], trace: str | None) -> SimOptions:
    """The simulator on the replay's window, budget, sequences, model length, KV blocks and
    scheduling (its engines' resolved settings), fitted to its steps file."""
    resolved = result["arms"][result["baseline"]]["resolved"]
    w = next(iter(result["workloads"].values()))["workload"]
    return SimOptions(shape=result["model_shape"], trace=trace, start=w["start"], n=w["n"],
                      budgets=(resolved["max_num_batched_tokens"],),
                      max_num_seqs=resolved["max_num_seqs"],
                      max_model_len=resolved["max_model_len"],
                      loads=tuple(float(lf) for lf in loads),
                      arms=("stock", sim_arm(result)), seeds=(0,),
                      num_blocks=resolved["num_gpu_blocks"],
                      step_timings=(str(path.parent / result["step_timing_file"]),),
                      sync_scheduling=not resolved["async_scheduling"])


def record(result: dict) -> dict:
    """What each calibration point of the replay records beside its ratios."""
    resolved = result["arms"][result["baseline"]]["resolved"]
    return {"budget": resolved["max_num_batched_tokens"],
            "window": next(iter(result["workloads"].values()))["workload"]["description"],
            "gpu_saturation_req_s": result["saturation"]["requests_per_s"]}
