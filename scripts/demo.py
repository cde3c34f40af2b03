"""`make demo`: serve a tiny local model with `vllm serve --scheduler prepack` on 127.0.0.1,
send completions of different lengths at once, print them and the packing statistics, and
stop the server by its PID."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

WORDS = "the model is fast and the cache is long so the prompt pack will serve".split()


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=".models/tiny-llama")
    parser.add_argument("--requests", type=int, default=12)
    args = parser.parse_args()

    from tests.harness.tiny_model import build

    model = str(build(args.model))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stats = Path(tempfile.mkdtemp()) / "prepack_stats.jsonl"
    log = Path(tempfile.mkdtemp()) / "serve.log"
    env = dict(os.environ, VLLM_PREPACK_STATS=str(stats))
    cmd = [str(Path(sys.executable).parent / "vllm"), "serve", model, "--scheduler", "prepack",
           "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
           "--enforce-eager", "--max-model-len", "1024", "--max-num-batched-tokens", "512",
           "--kv-cache-memory-bytes", str(64 << 20), "--prepack-stats-log-interval-s", "1"]
    print("$", " ".join(cmd))
    with open(log, "w") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
    print(f"server PID {server.pid}, log {log}")
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                print(log.read_text()[-4000:])
                raise SystemExit(f"vllm serve exited with {server.returncode}")
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("vllm serve did not become ready in 300 s") from None
                time.sleep(1)
        lengths = [3 + (i * 97) % 700 for i in range(args.requests)]
        prompts = [" ".join(WORDS[j % len(WORDS)] for j in range(n)) for n in lengths]

        def complete(prompt: str) -> tuple[int, str, float]:
            t0 = time.perf_counter()
            r = post(url + "/v1/completions", {"model": model, "prompt": prompt,
                                               "max_tokens": 12, "temperature": 0})
            return r["usage"]["prompt_tokens"], r["choices"][0]["text"], time.perf_counter() - t0

        with ThreadPoolExecutor(len(prompts)) as pool:
            results = list(pool.map(complete, prompts))
        print(f"\n{'prompt tokens':>13}  {'latency':>8}  completion (random weights)")
        for n, text, dt in results:
            print(f"{n:>13}  {dt:7.2f}s  {text.strip()[:60]!r}")
        chat = post(url + "/v1/chat/completions", {
            "model": model, "max_tokens": 8, "temperature": 0,
            "messages": [{"role": "user", "content": "is the prompt pack fast"}]})
        print("\nchat:", repr(chat["choices"][0]["message"]["content"]))
        time.sleep(1.5)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        print(f"\nstopped server PID {server.pid}")
    steps = [json.loads(line) for line in stats.read_text().splitlines() if line.strip()]
    packed = [s for s in steps if s["prefill_tokens"]]
    print(f"\npacking statistics ({stats}): {len(steps)} steps, {len(packed)} with prefill")
    print(f"{'step':>5} {'admitted':>8} {'prefill tok':>11} {'fill':>6} {'partial':>7} "
          f"{'overtakes':>9} {'plan ok':>7}")
    for s in packed:
        print(f"{s['step']:>5} {s['admitted']:>8} {s['prefill_tokens']:>11} "
              f"{100 * s['fill']:5.1f}% {s['partial_prefills']:>7} {s['overtakes']:>9} "
              f"{str(s['plan_adhered']):>7}")
    lines = [line for line in log.read_text().splitlines()
             if "Packing stats" in line or "scheduler class" in line]
    print("\nengine-core log:\n" + "\n".join(lines[-3:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
