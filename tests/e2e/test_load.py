"""Bounded load test of `vllm serve --scheduler prepack` on 127.0.0.1: concurrent clients,
mixed prompt lengths, streaming and not, some clients hanging up mid-request, bad input.
Every request that was not abandoned completes with output identical to a `--scheduler
default` server; abandoned requests free their KV blocks; the server still answers."""

from __future__ import annotations

import http.client
import json
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.harness.env import MAX_MODEL_LEN
from tests.harness.server import serve

ARGS = ["--dtype", "float32", "--enforce-eager", "--max-model-len", str(MAX_MODEL_LEN),
        "--kv-cache-memory-bytes", str(64 << 20), "--seed", "0", "--max-num-seqs", "16",
        "--max-num-batched-tokens", "1024"]
N_REQUESTS = 48


def _requests(seed: int = 5) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(N_REQUESTS):
        n = rng.choice([1, 3, 20, 100, 300, 700, MAX_MODEL_LEN - 16])
        out.append({"id": i, "prompt": [rng.randrange(3, 500) for _ in range(n)],
                    "stream": i % 3 == 0, "hang_up": i % 7 == 3})
    return out


def _post(port: int, body: dict, *, stream: bool, hang_up: bool) -> str | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", "/v1/completions", json.dumps(body),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    if not stream:
        text = json.loads(resp.read())["choices"][0]["text"]
        conn.close()
        return text
    pieces = []
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        pieces.append(json.loads(data)["choices"][0]["text"])
        if hang_up:  # the client goes away after its first chunk
            conn.sock.close()
            conn.close()
            return None
    conn.close()
    return "".join(pieces)


def _load(server, model: str) -> dict[int, str | None]:
    reqs = _requests()

    def one(r):
        body = {"model": model, "prompt": r["prompt"], "temperature": 0,
                "max_tokens": 64 if r["hang_up"] else 8, "stream": r["stream"] or r["hang_up"]}
        return r["id"], _post(server.port, body, stream=body["stream"], hang_up=r["hang_up"])

    with ThreadPoolExecutor(12) as pool:
        return dict(pool.map(one, reqs))


def _kv_usage(server) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    values = re.findall(r"^vllm:kv_cache_usage_perc\{[^}]*\} (\S+)$", text, re.M)
    assert values, "no vllm:kv_cache_usage_perc metric"
    return max(float(v) for v in values)


def _bad_inputs(server, model: str) -> None:
    too_long = server_error(server, {"model": model, "prompt": [5] * (MAX_MODEL_LEN + 10),
                                     "max_tokens": 4})
    assert too_long[0] == 400 and str(MAX_MODEL_LEN) in too_long[1], too_long
    empty = server_error(server, {"model": model, "prompt": "", "max_tokens": 4})
    assert empty[0] in (200, 400), empty  # vLLM's own answer, unchanged by the plugin


def server_error(server, body: dict) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", "/v1/completions", json.dumps(body),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.read().decode()


@pytest.mark.cli
def test_load_with_hang_ups_matches_default(tiny_model, tmp_path, engine_lock):
    results, usage, bad = {}, {}, {}
    for scheduler in ("prepack", "default"):
        with serve([tiny_model, *ARGS, "--scheduler", scheduler],
                   tmp_path / f"{scheduler}.log", VLLM_ENABLE_V1_MULTIPROCESSING="1") as s:
            results[scheduler] = _load(s, tiny_model)
            deadline = time.monotonic() + 30
            while (u := _kv_usage(s)) > 0 and time.monotonic() < deadline:
                time.sleep(0.5)
            usage[scheduler] = u
            _bad_inputs(s, tiny_model)
            bad[scheduler] = server_error(s, {"model": tiny_model, "prompt": "the model",
                                              "max_tokens": 3, "temperature": 0})
            log = s.log()
        if scheduler == "prepack":
            assert "PrepackSyncScheduler" in log
    kept = {i for i, r in enumerate(_requests()) if not r["hang_up"]}
    assert all(results["prepack"][i] is not None for i in kept)
    assert {i: results["prepack"][i] for i in kept} == {i: results["default"][i] for i in kept}
    assert usage == {"prepack": 0.0, "default": 0.0}
    assert bad["prepack"][0] == 200  # still answers after the load
