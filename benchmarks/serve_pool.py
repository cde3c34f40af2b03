"""Serving A/B servers: one ``vllm serve`` per arm (at most one at a time on CPU), checked for
the scheduler class its engine core built and warmed up; its ``/metrics`` counters."""

from __future__ import annotations

import ast
import contextlib
import json
import random
import re
import shlex
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.harness.server import Server, http_get

ARMS = ("stock", "prepack")
EXPECTED_CLASSES = {"stock": ("vllm.v1.core.sched.scheduler.Scheduler",
                              "vllm.v1.core.sched.async_scheduler.AsyncScheduler"),
                    "prepack": ("vllm_prepack.adapters.scheduler.PrepackSyncScheduler",
                                "vllm_prepack.adapters.scheduler.PrepackAsyncScheduler")}


def runs_prepack(arm: str, args: Any) -> bool:
    """Whether the arm's server runs the prepack scheduler (not the second server of an A/A)."""
    return arm == "prepack" and not args.aa


def expected_classes(arm: str, args: Any) -> tuple[str, ...]:
    """The scheduler classes an arm's engine core may build (:func:`runs_prepack`)."""
    return EXPECTED_CLASSES["prepack" if runs_prepack(arm, args) else "stock"]


def comparison(result: dict) -> str:
    """``A/A`` for a result of stock against a second stock server, else ``A/B``."""
    return "A/A" if result.get("aa") else "A/B"


def arm_label(result: dict, arm: str) -> str:
    """An arm's name in reports and plots: an A/A result's second arm is ``stock B``."""
    return "stock B" if result.get("aa") and arm == "prepack" else arm


STEPS = "vllm_prepack_steps_total"
"""The prepack scheduler's steps (its statistics file holds one line per step)."""
COUNTERS = ("vllm:prompt_tokens_total", "vllm:generation_tokens_total",
            "vllm:request_success_total:length", "vllm:request_success_total:stop",
            "vllm:request_success_total:abort", "vllm:request_success_total:error",
            "vllm:num_preemptions_total", "vllm:prefix_cache_hits_total",
            "vllm:time_to_first_token_seconds_sum", "vllm:time_to_first_token_seconds_count",
            "vllm:request_queue_time_seconds_sum", "vllm:request_queue_time_seconds_count",
            "vllm:request_prefill_time_seconds_sum", "vllm:request_prefill_time_seconds_count",
            "vllm:request_time_per_output_token_seconds_sum",
            "vllm:request_time_per_output_token_seconds_count",
            "vllm:iteration_tokens_total_count", STEPS)
"""``vllm:iteration_tokens_total_count``: the engine steps whose outputs reached the front end
(vLLM observes that histogram once per step's outputs), counted in either arm."""
SERVER_MEANS = {"server_ttft_mean_ms": "vllm:time_to_first_token_seconds",
                "server_queue_mean_ms": "vllm:request_queue_time_seconds",
                "server_prefill_mean_ms": "vllm:request_prefill_time_seconds",
                "server_tpot_mean_ms": "vllm:request_time_per_output_token_seconds"}
"""The server's own means per request: time to first token (from the API server's arrival),
time waiting in the engine core's queue, time from first scheduled to the prompt computed, and
time per output token after the first (engine-core timestamps). TTFT less the two engine-side
times is what the front end and the output path add; the client's TPOT less the server's is
the output path's."""
GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")


def log_facts(log: str) -> dict:
    """What the server log says it ran: vLLM's parsed non-default args, engine config and KV
    cache size, and the prepack scheduler's options."""
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
    m = re.search(r"[GC]PU KV cache size: ([\d,]+) tokens", log)  # CUDA, or the CPU backend
    if m:
        facts["kv_cache_tokens"] = int(m.group(1).replace(",", ""))
    m = re.search(r"Engine core built \w+ \((\{.*\})\)$", log, re.M)
    if m:  # the prepack scheduler's resolved options (PrepackConfig), as the engine core ran them
        try:
            facts["prepack_options"] = ast.literal_eval(m.group(1))
        except (ValueError, SyntaxError):
            facts["prepack_options"] = m.group(1)
    return facts


def scrape(url: str) -> dict[str, float]:
    """Selected ``/metrics`` series, summed over labels (request_success by reason); the
    prepack scheduler's steps also per engine (``<STEPS>:<engine index>``)."""
    values: dict[str, float] = {}
    for line in http_get(url + "/metrics").splitlines():
        if not line.startswith(("vllm:", STEPS)):
            continue
        name, _, rest = line.partition("{")
        labels, _, value = rest.rpartition("} ") if rest else ("", "", line.split()[-1])
        name = name.split()[0]
        if name == "vllm:request_success_total":
            reason = re.search(r'finished_reason="(\w+)"', labels)
            name = f"{name}:{reason.group(1) if reason else 'unknown'}"
        if name == STEPS:
            engine = re.search(r'engine="(\d+)"', labels)
            with contextlib.suppress(ValueError):
                values[f"{STEPS}:{engine.group(1) if engine else 0}"] = float(value)
        if name in COUNTERS or name in GAUGES:
            with contextlib.suppress(ValueError):
                values[name] = values.get(name, 0.0) + float(value)
    return values


def step_windows(before: dict[str, float], after: dict[str, float]) -> dict[int, range]:
    """Per engine index, the prepack scheduler's step numbers between two scrapes."""
    prefix = STEPS + ":"
    return {int(k[len(prefix):]): range(int(before.get(k, 0)) + 1, int(v) + 1)
            for k, v in after.items() if k.startswith(prefix)}


def metrics_delta(before: dict[str, float], after: dict[str, float]) -> dict:
    out = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in COUNTERS}
    out.update({k + " (after)": after.get(k) for k in GAUGES})
    for key, series in SERVER_MEANS.items():
        count = out[series + "_count"]
        out[key] = 1000 * out[series + "_sum"] / count if count else None
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



def serve_args(arm: str, args: Any, gpu_util: float | None,
               stats_path: Path) -> list[str]:
    """``vllm serve`` arguments of one arm (host and port are added per start)."""
    caching = {"off": ["--no-enable-prefix-caching"], "on": ["--enable-prefix-caching"],
               "default": []}[args.prefix_caching]
    argv = [args.model, *caching, *shlex.split(args.serve_args)]
    if args.model_shape:
        argv += ["--load-format", "dummy", "--tokenizer", args.tokenizer]
    if gpu_util is not None:
        argv += ["--gpu-memory-utilization", str(gpu_util)]
    if runs_prepack(arm, args):
        argv += ["--scheduler", "prepack", *shlex.split(args.prepack_args),
                 "--prepack-stats-path", str(stats_path)]
    return argv


class Pool:
    """At most one server per arm; with ``one_at_a_time`` at most one server at all."""

    def __init__(self, args: Any, workdir: Path, one_at_a_time: bool,
                 gpu_util: float | None, lengths: Sequence[int], output_len: int):
        self.args, self.workdir, self.one_at_a_time = args, workdir, one_at_a_time
        self.lengths, self.output_len, self.gpu_util = lengths, output_len, gpu_util
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
        expected = expected_classes(arm, self.args)
        if cls not in expected:
            self.stop(arm)
            raise RuntimeError(f"{arm}: engine core scheduler class {cls!r}, expected one of "
                               f"{expected}; log {server.log_path}")
        t0 = time.monotonic()
        warmup(server.url, self.args.model, self.args.warmup, self.lengths, self.output_len,
               index)
        self.starts[arm].append({"order": sum(map(len, self.starts.values())),
                                 "port": server.port, "ready_s": round(ready_s, 2),
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

