"""The engine side of :mod:`benchmarks.ab`: one arm's engine in its own process, started once,
answering one command per stdin line (a repetition of a workload) with a JSON record
(:func:`benchmarks.harness.reply`); the parent drives it through
:class:`benchmarks.harness.EngineProcess`."""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks import ab_trace, harness, step_timing, workloads
from benchmarks.equivalence import impl_classes

ARMS = {
    # name: (scheduler, packed_attention, client order, more --prepack-* options)
    "stock": ("default", None, "arrival", {}),
    "stock-sorted": ("default", None, "shortest", {}),
    "prepack": ("prepack", "off", "arrival", {}),
    "prepack-packed": ("prepack", "on", "arrival", {}),
    "prepack-default": ("prepack", "auto", "arrival", {}),  # every option at its default
    "prepack-fcfs": ("prepack", "auto", "arrival", {"policy": "fcfs"}),
    "prepack-sjf": ("prepack", "auto", "arrival", {"policy": "sjf"}),
    "prepack-hrrn": ("prepack", "auto", "arrival", {"policy": "hrrn"}),
}


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def engine_kwargs_for(arm: str, args) -> dict:
    import vllm_prepack

    scheduler, packed, _, arm_options = ARMS[arm]
    kwargs = dict(json.loads(args.engine_args))
    if args.max_num_batched_tokens:
        kwargs["max_num_batched_tokens"] = args.max_num_batched_tokens
    if args.max_num_seqs:
        kwargs["max_num_seqs"] = args.max_num_seqs
    kwargs.update(enable_chunked_prefill=args.chunked == "on", disable_log_stats=False, seed=0)
    if args.prefix_caching != "default":  # "default": vLLM's own (on)
        kwargs["enable_prefix_caching"] = args.prefix_caching == "on"
    if scheduler == "prepack":
        options = dict(json.loads(args.prepack_options), packed_attention=packed,
                       **arm_options)
        kwargs.update(vllm_prepack.engine_kwargs(**options))
    return kwargs


def resolved_config(engine) -> dict:
    cfg = engine.vllm_config
    sc, cc = cfg.scheduler_config, cfg.cache_config
    comp = cfg.compilation_config
    return {
        "max_num_batched_tokens": sc.max_num_batched_tokens, "max_num_seqs": sc.max_num_seqs,
        "enable_chunked_prefill": sc.enable_chunked_prefill,
        "async_scheduling": sc.async_scheduling, "scheduler_cls": str(sc.scheduler_cls),
        "long_prefill_token_threshold": sc.long_prefill_token_threshold,
        "block_size": cc.block_size, "enable_prefix_caching": cc.enable_prefix_caching,
        "num_gpu_blocks": cc.num_gpu_blocks, "max_model_len": cfg.model_config.max_model_len,
        "dtype": str(cfg.model_config.dtype), "enforce_eager": cfg.model_config.enforce_eager,
        "cudagraph_mode": str(getattr(comp, "cudagraph_mode", None)),
        "compilation_mode": str(getattr(comp, "mode", None)),
        "additional_config": dict(cfg.additional_config or {}),
    }


def build_engine(model: str, kwargs: dict, entry_point: str):
    """``(llm or None, engine)``: ``LLM(...)``, or ``LLMEngine.from_engine_args`` (vLLM's
    engine context: ``SchedulerConfig``'s own defaults)."""
    if entry_point == "llmengine":
        from vllm import EngineArgs
        from vllm.v1.engine.llm_engine import LLMEngine

        return None, LLMEngine.from_engine_args(EngineArgs(model=model, **kwargs))
    from vllm import LLM

    llm = LLM(model, **kwargs)
    return llm, llm.llm_engine


@dataclass
class Engine:
    """One arm's engine and what measures it."""

    arm: str
    llm: object
    engine: object
    observer: object
    timer: step_timing.StepTimer | None
    base: object  # the trace window, or None
    vocab: int
    params: object  # SamplingParams of every prompt outside a trace


def start(args, arm: str) -> tuple[Engine, dict]:
    """Build the arm's engine, warm it up; the engine and its ``ready`` record."""
    from vllm import SamplingParams

    from vllm_prepack.adapters.scheduler import attach_observer

    kwargs = engine_kwargs_for(arm, args)
    llm, engine = build_engine(args.model, kwargs, args.entry_point)
    core = engine.engine_core.engine_core
    scheduler = core.scheduler
    e = Engine(arm, llm, engine,
               getattr(scheduler, "prepack_observer", None) or attach_observer(scheduler),
               step_timing.attach(core) if args.step_timing == "on" else None,
               ab_trace.trace_base(args) if args.workload == "trace" else None,
               engine.vllm_config.model_config.get_vocab_size(),
               SamplingParams(temperature=0, max_tokens=args.max_tokens, ignore_eos=True))
    fits = engine.vllm_config.model_config.max_model_len - args.max_tokens
    warm = workloads.make("lognormal", 32, 10_000,
                          max_len=min(args.max_len or fits, fits)).prompts(e.vocab)
    run_arrivals(engine, warm, (0.0,) * len(warm), e.params)
    info = {"arm": arm, "entry_point": args.entry_point, "engine_kwargs": kwargs,
            "resolved": resolved_config(engine),
            "scheduler_class": f"{type(scheduler).__module__}.{type(scheduler).__qualname__}",
            "attention_impls": engine.collective_rpc(impl_classes)[0]}
    return e, info


def serve(args, arm: str, result_dir: str) -> None:
    """The engine process: ``ready``, then one record per command line until ``stop``."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the scheduler lives in this process
    e, info = start(args, arm)
    harness.reply(result_dir, "ready", info)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("stop"):
            break
        workload = ab_trace.workload_for(args, cmd, e.base)
        record = run_rep(args, e, workload, cmd["rep"])
        harness.reply(result_dir, f"{workload.name}-rep{cmd['rep']}", record)


def run_rep(args, e: Engine, workload, rep: int) -> dict:
    """One repetition of ``workload`` on a fresh prompt set: its record."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from vllm_prepack.adapters import attention
    from vllm_prepack.stats import reset

    prompts = workload.prompts(e.vocab, rep)
    order = list(range(len(prompts)))
    if ARMS[e.arm][2] == "shortest":
        order.sort(key=lambda i: len(prompts[i]))
    params = e.params
    if e.base is not None:  # the trace's own output lengths
        params = [SamplingParams(temperature=0, max_tokens=o, ignore_eos=True)
                  for o in workload.output_lens]
    reset(e.observer)
    e.engine.collective_rpc(attention.reset_counters)
    gc.collect()
    if e.timer is not None:
        e.timer.reset()
    t0 = time.perf_counter()
    if args.rate or e.base is not None:
        outs = run_arrivals(e.engine, prompts, workload.arrivals, params)
    elif e.llm is not None:
        outs = e.llm.generate([TokensPrompt(prompt_token_ids=prompts[i]) for i in order],
                              params, use_tqdm=False)
    else:
        outs = run_arrivals(e.engine, [prompts[i] for i in order], (0.0,) * len(order),
                            params)
    wall = time.perf_counter() - t0
    counters = e.engine.collective_rpc(attention.read_counters)[0]
    return record(e, workload, rep, outs, order, wall, counters)


def record(e: Engine, workload, rep: int, outs: list, order: list[int], wall: float,
           counters: dict) -> dict:
    """What one repetition measured (``outs`` in submission ``order``)."""
    stats = [o.metrics for o in outs if o.metrics is not None]  # vLLM's RequestStateStats
    ttft = [m.first_token_latency for m in stats]
    tokens = workload.total_tokens
    first = {order[j]: o.outputs[0].token_ids[0] for j, o in enumerate(outs)}
    summary = e.observer.summary()
    generated = sum(len(o.outputs[0].token_ids) for o in outs)
    row = {
        "rep": rep, "wall_s": wall, "prefill_tokens_per_s": tokens / wall,
        "output_tokens": generated, "output_tokens_per_s": generated / wall,
        "requests_per_s": len(outs) / wall,
        "prefix_cache_hit_tokens": sum(o.num_cached_tokens or 0 for o in outs),
        "ttft_mean_s": sum(ttft) / len(ttft) if ttft else None,
        "ttft_p50_s": percentile(ttft, 50) if ttft else None,
        "ttft_p99_s": percentile(ttft, 99) if ttft else None,
        "ttft_s": [round(t, 5) for t in ttft],
        # Per request, the engine's part of its TTFT (vLLM's queue time, then from its first
        # step to its first token) and its preemptions.
        "queue_s": [round(m.scheduled_ts - m.queued_ts, 5) for m in stats],
        "prefill_s": [round(m.first_token_ts - m.scheduled_ts, 5) for m in stats],
        "preemptions": [m.num_preemptions for m in stats],
        "engine_steps": summary["steps"], "split_prompts": summary["split_prompts"],
        "mean_prefill_fill": summary["mean_prefill_fill"],
        "overtakes": summary["overtakes"], "plan_adherence": summary["plan_adherence"],
        "planner_faults": summary["planner_faults"],
        "packed_prefill_tokens": counters["tokens"],
        "packed_share": counters["tokens"] / tokens,
        "packed_steps": counters["steps"],
        "first_tokens_digest": hash(tuple(first[i] for i in range(len(outs)))),
    }
    if e.base is not None:
        wrong = [i for i, o in enumerate(outs)
                 if len(o.outputs[0].token_ids) != workload.output_lens[i]]
        row["output_lengths_as_trace"] = not wrong
    if e.timer is not None:
        cols = e.timer.columns()
        row["step_timing"] = step_timing.summarize(cols)
        row["steps"] = cols  # moved to the steps file by the parent
    return row


def run_arrivals(engine, prompts: list[list[int]], arrivals: Sequence[float], params) -> list:
    """Add each prompt to ``engine`` (an ``LLMEngine``) at its arrival time (seconds from
    now) while stepping the engine; TTFT counts from the scheduled arrival, so a late add is
    charged to the run. ``params``: one ``SamplingParams`` for all, or one per prompt.
    Returns the finished outputs in prompt order."""
    from vllm.inputs import TokensPrompt

    start_wall, start = time.time(), time.perf_counter()
    index: dict[str, int] = {}
    done: dict[int, object] = {}
    nxt = 0
    while nxt < len(prompts) or engine.has_unfinished_requests():
        now = time.perf_counter() - start
        while nxt < len(prompts) and arrivals[nxt] <= now:
            req_id = f"a{nxt}"
            p = params[nxt] if isinstance(params, list) else params
            internal = engine.add_request(req_id, TokensPrompt(prompt_token_ids=prompts[nxt]),
                                          p, arrival_time=start_wall + arrivals[nxt])
            index[req_id] = index[internal] = nxt
            nxt += 1
        if engine.has_unfinished_requests():
            for out in engine.step():
                if out.finished:
                    done[index[out.request_id]] = out
        else:
            time.sleep(max(0.0, min(0.002, arrivals[nxt] - now)))
    missing = sorted(set(range(len(prompts))) - set(done))
    if missing:
        raise RuntimeError(f"requests {missing[:10]} never finished")
    return [done[i] for i in range(len(prompts))]
