"""Greedy-output equivalence on a real engine: stock vs prepack scheduler, and the packed
attention path on vs off (same scheduler). Each arm runs in its own process; the JSON says
which classes ran (scheduler, attention impl) and what the packed-path counters read.

    VLLM_BATCH_INVARIANT=1 python -m benchmarks.equivalence --model-shape llama-3.2-1b \\
        --out benchmarks/results/equivalence_h100.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks import harness, workloads

ARMS = {
    "stock": {},
    "prepack": {"packed_attention": "off"},
    "prepack-packed": {"packed_attention": "on"},
}


def impl_classes(worker) -> list[str]:
    """The attention impl classes of one worker's model (``llm.collective_rpc``)."""
    return sorted({f"{type(m.impl).__module__}.{type(m.impl).__qualname__}"
                   for m in worker.model_runner.model.modules() if hasattr(m, "impl")})


def _rank_info(worker) -> dict:
    """What one worker process ran: its ranks, whether the plugin registered there, its
    attention classes and packed-path counters."""
    from vllm.distributed import parallel_state as ps

    import vllm_prepack
    from vllm_prepack.adapters import attention

    return {"pid": os.getpid(), "tp_rank": ps.get_tensor_model_parallel_rank(),
            "pp_rank": ps.get_pp_group().rank_in_group,
            "plugin_registered": vllm_prepack._registered,
            "attention_impls": impl_classes(worker),
            "packed_counters": attention.read_counters()}


def worker(args: Options, arm: str, result_path: str) -> None:
    """One arm's engine (this process): greedy outputs and what ran, to ``result_path``."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    import vllm_prepack
    from vllm_prepack.adapters import attention

    kwargs = dict(json.loads(args.engine_args))
    if arm != "stock":
        kwargs.update(vllm_prepack.engine_kwargs(**ARMS[arm],
                                                 **json.loads(args.prepack_options)))
    llm = LLM(args.model, **kwargs)
    scheduler = llm.llm_engine.engine_core.engine_core.scheduler
    vocab = llm.llm_engine.vllm_config.model_config.get_vocab_size()
    w = workloads.make(args.workload, args.n, args.seed, max_len=args.max_len)
    prompts = [TokensPrompt(prompt_token_ids=p) for p in w.prompts(vocab)]
    llm.collective_rpc(attention.reset_counters)
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=args.max_tokens,
                                                logprobs=1, ignore_eos=True), use_tqdm=False)
    ranks = llm.collective_rpc(_rank_info)
    cfg = llm.llm_engine.vllm_config
    result = {
        "arm": arm, "engine_kwargs": kwargs,
        "scheduler_class": f"{type(scheduler).__module__}.{type(scheduler).__qualname__}",
        "async_scheduling": cfg.scheduler_config.async_scheduling,
        "cudagraph_mode": str(cfg.compilation_config.cudagraph_mode),
        "attention_impls": ranks[0]["attention_impls"],
        "packed_counters": ranks[0]["packed_counters"],
        "ranks": ranks,
        "batch_invariant": os.environ.get("VLLM_BATCH_INVARIANT", "0"),
        "workload": w.describe(),
        "tokens": [list(o.outputs[0].token_ids) for o in outs],
        "logprobs": [[lp[t].logprob for t, lp in zip(o.outputs[0].token_ids,
                                                      o.outputs[0].logprobs)] for o in outs],
    }
    Path(result_path).write_text(json.dumps(result))


def compare(a: dict, b: dict) -> dict:
    same = [x == y for x, y in zip(a["tokens"], b["tokens"])]
    first_diff = []
    for ta, tb in zip(a["tokens"], b["tokens"]):
        k = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), len(ta))
        first_diff.append(k)
    # Logprob of the shared prefix of each output (same tokens, so comparable).
    lp_diffs = [abs(x - y) for la, lb, k in zip(a["logprobs"], b["logprobs"], first_diff)
                for x, y in zip(la[:k], lb[:k])]
    return {"identical_outputs": sum(same), "outputs": len(same),
            "token_identical": all(same),
            "max_logprob_diff_on_shared_prefix": max(lp_diffs) if lp_diffs else 0.0,
            "first_divergence_positions": [k for k in first_diff if k < len(a["tokens"][0])]}


@dataclass(frozen=True)
class Options:
    """The CLI of ``python -m benchmarks.equivalence``, one field per flag."""

    model: str | None = None
    model_shape: str = "llama-3.2-1b"
    arms: str = ",".join(ARMS)
    workload: str = "lognormal"
    n: int = 64
    seed: int = 0
    max_len: int = 2048
    max_tokens: int = 16
    engine_args: str = "{}"
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    prepack_options: str = "{}"
    out: str | None = None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.equivalence", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_flags(p, Options)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--arm", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p


def resolve(o: Options) -> Options:
    """Parallel sizes folded into ``engine_args``; the ``--model-shape`` config (dummy
    weights, no tokenizer, no prefix caching) when no ``--model`` is given."""
    parallel = {k: v for k, v in (("tensor_parallel_size", o.tensor_parallel_size),
                                  ("pipeline_parallel_size", o.pipeline_parallel_size))
                if v > 1}
    if parallel:
        o = dataclasses.replace(o, engine_args=json.dumps({**json.loads(o.engine_args),
                                                           **parallel}))
    if o.model is None:
        from benchmarks.models import config_dir

        extra = {"load_format": "dummy", "skip_tokenizer_init": True,
                 "enable_prefix_caching": False, "seed": 0, **json.loads(o.engine_args)}
        o = dataclasses.replace(o, model=str(config_dir(o.model_shape)),
                                engine_args=json.dumps(extra))
    return o


def run_arm(o: Options, arm: str, tmp: Path) -> dict:
    """One arm in its own process: its result, or ``{"error": ...}``."""
    result = tmp / f"{arm}.json"
    cmd = [sys.executable, "-m", "benchmarks.equivalence", "--worker", "--arm", arm,
           "--result", str(result), "--model", o.model, "--engine-args",
           o.engine_args, "--prepack-options", o.prepack_options, "--workload",
           o.workload, "--n", str(o.n), "--seed", str(o.seed), "--max-len",
           str(o.max_len), "--max-tokens", str(o.max_tokens)]
    print(f"[{arm}] starting", flush=True)
    proc = subprocess.run(cmd, cwd=harness.ROOT, capture_output=True, text=True,
                          env=harness.child_env())
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-6000:])
        return {"error": proc.stderr[-4000:]}
    r = json.loads(result.read_text())
    print(f"[{arm}] {r['scheduler_class']} async={r['async_scheduling']} "
          f"impls={r['attention_impls']} counters={r['packed_counters']}", flush=True)
    for rank in r["ranks"][1:]:
        print(f"[{arm}] rank tp={rank['tp_rank']} pp={rank['pp_rank']}: "
              f"impls={rank['attention_impls']} counters={rank['packed_counters']}",
              flush=True)
    return r


PAIRS = [("stock", "prepack", "scheduler only"),
         ("prepack", "prepack-packed", "attention path only"),
         ("stock", "prepack-packed", "scheduler and attention path")]


def run(options: Options) -> dict:
    """Every arm in turn, then each pair of arms compared; the JSON (also to ``out``)."""
    o = resolve(options)
    tmp = Path(tempfile.mkdtemp(prefix="prepack_eq_"))
    runs = {arm: run_arm(o, arm, tmp) for arm in o.arms.split(",")}
    comparisons = {}
    for a, b, what in PAIRS:
        if "tokens" in runs.get(a, {}) and "tokens" in runs.get(b, {}):
            comparisons[f"{a} vs {b}"] = {"toggled": what, **compare(runs[a], runs[b])}
            print(f"{a} vs {b} ({what}): {comparisons[f'{a} vs {b}']}", flush=True)
    payload = {"benchmark": "greedy equivalence", **harness.environment(),
               "model": o.model, "model_shape": o.model_shape,
               "engine_args": json.loads(o.engine_args),
               "comparisons": comparisons,
               "runs": {a: {k: v for k, v in r.items() if k not in ("tokens", "logprobs")}
                        for a, r in runs.items()}}
    if o.out:
        harness.write_json(o.out, payload)
        print("wrote", o.out)
    return payload


def main(argv: list[str] | None = None) -> dict | None:
    ns = parser().parse_args(sys.argv[1:] if argv is None else argv)
    fields = {f.name for f in dataclasses.fields(Options)}
    options = Options(**{k: v for k, v in vars(ns).items() if k in fields})
    if ns.worker:
        worker(resolve(options), ns.arm, ns.result)
        return None
    return run(options)


if __name__ == "__main__":
    main()
