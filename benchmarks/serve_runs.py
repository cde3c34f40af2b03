"""One serving A/B run: ``vllm bench serve`` (vLLM's own client, in the long-lived
:mod:`benchmarks.bench_client` process) replays a trace against one arm; the checks a run must
pass, the ``/metrics`` cross-check and the prepack arm's packing statistics."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.serve_cpu import cpu_busy, cpu_seconds
from benchmarks.serve_pool import (
    Pool,
    metrics_delta,
    runs_prepack,
    scrape,
    step_windows,
    wait_for_counts,
)
from benchmarks.serve_traces import CHUNK
from tests.harness.server import Server, child_env, settled, vllm_command
from vllm_prepack.stats import summarize_records

ROOT = Path(__file__).resolve().parents[1]
BENCH_DROP = (  # per-request lists (TTFTs are kept apart), and rate fields a self-timed
    # replay ignores
    "input_lens", "output_lens", "ttfts", "itls", "latencies", "start_times", "queue_times",
    "generated_texts", "errors", "request_rate", "burstiness")


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

    def run(self, argv: list[str], log_path: Path,
            timeout: float) -> tuple[int | None, float | None]:
        """``argv`` after ``vllm bench serve``: its return code (None: it ran past ``timeout``)
        and the client's CPU seconds in it (None: not reported)."""
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
                return None, None
        answer = json.loads(line) if line else {"returncode": 1}
        return answer["returncode"], answer.get("cpu_s")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None


CLIENT = BenchClient()


def bench_argv(server: Server, args: Any, trace: Path, n: int,
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


def run_records(path: Path, offsets: dict[Path, int], windows: dict[int, range],
                timeout: float = 10) -> dict[str, list[dict]]:
    """Per statistics file, the records of the steps in ``windows`` (per engine index, from
    ``/metrics``), read past ``offsets``, once they are all there: the engine writes its file
    from a thread, a moment behind its steps (a record of an earlier step may land after the
    offsets were taken). No ``windows`` (no step series on ``/metrics``): every record past
    the offsets, once the files have stopped growing."""
    if not windows:
        settled(stats_files(path), timeout=timeout)
    expected = sum(map(len, windows.values()))
    deadline = time.monotonic() + timeout
    while True:
        per_file = {}
        for p in stats_files(path):
            with open(p) as f:
                f.seek(offsets.get(p, 0))
                records = [json.loads(x) for x in f.read().splitlines() if x.strip()]
            per_file[p.name] = [r for r in records if not windows
                                or r.get("step") in windows.get(r.get("dp_rank", 0), ())]
        found = sum(map(len, per_file.values()))
        if not windows or found >= expected or time.monotonic() > deadline:
            return per_file
        time.sleep(0.1)


def packing_of_run(path: Path, offsets: dict[Path, int], windows: dict[int, range],
                   notes: list[str], timeout: float = 10) -> dict:
    """The prepack arm's packing statistics of one run (per rank too, with data parallelism);
    a statistics file that lacks a record of a step ``/metrics`` counted is noted. Without
    the step series on ``/metrics`` (a front end without the plugin's stat logger), the records
    past the offsets count, and that is noted."""
    per_file = run_records(path, offsets, windows, timeout)
    records = [r for file_records in per_file.values() for r in file_records]
    steps = sum(map(len, windows.values()))
    if not windows:
        notes.append("no vllm_prepack_steps_total on /metrics: the run's statistics are the "
                     "records written past its start")
    elif len(records) != steps:
        notes.append(f"statistics file records {len(records)} != /metrics steps {steps}")
    out = {"packing": summarize_records(records)} if per_file else {}
    if len(per_file) > 1:  # data parallel: one file per engine core
        out["packing_per_rank"] = {name: summarize_records(x) for name, x in per_file.items()}
    elif records:
        out["step_series"] = step_series(records)
    return out


SERIES = ("step", "prefill_tokens", "scheduled_tokens", "admitted", "running", "preempted")


def step_series(records: list[dict]) -> dict[str, list]:
    """One engine's step records as columns, in step order, for fitting a step-time model to
    the server's own steps (:func:`benchmarks.step_source.serve_steps`): ``time`` (seconds
    since the run's first step) and :data:`SERIES`."""
    rows = sorted(records, key=lambda r: r.get("step", 0))
    t0 = rows[0].get("time", 0.0)
    return {"time": [round(r.get("time", 0.0) - t0, 6) for r in rows],
            **{c: [r.get(c, 0) for r in rows] for c in SERIES}}


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
              name: str, args: Any) -> dict:
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
    cpu0 = cpu_seconds(server.proc.pid)
    returncode, client_cpu_s = CLIENT.run(cmd[3:], log_path, args.max_duration_s)
    record["wall_s"] = round(time.monotonic() - t0, 3)
    record["cpu_busy"] = cpu_busy(cpu0, cpu_seconds(server.proc.pid), client_cpu_s,
                                  record["wall_s"])
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
    if runs_prepack(arm, args):
        record.update(packing_of_run(pool.stats_path, offsets, step_windows(before, after),
                                     notes))
    record.update(ok=not problems, problems=problems, bench=bench, metrics=delta,
                  metrics_cross_check=notes or "agrees")
    if problems:
        print(f"RUN FAILED {name}: {'; '.join(problems)}", file=sys.stderr, flush=True)
    if notes:
        print(f"METRICS DISAGREE {name}: {'; '.join(notes)}", file=sys.stderr, flush=True)
    return record

