"""``vllm bench serve``, many runs in one process: vLLM's own client code, imported once.

Each command (one JSON line on stdin: ``{"argv": [...], "log": PATH}``) is the argument list of
``vllm bench serve``, parsed by vLLM's own parser and run by vLLM's own
``vllm.benchmarks.serve.main``, exactly as the CLI does; its output goes to ``log``. One JSON
line answers each command: ``{"returncode": N, "cpu_s": S}`` (``S``: this process's CPU seconds,
user and system, in that command: whether the client kept up with the replay). Starting
``vllm bench serve`` afresh costs seconds per run (imports, tokenizer); serving A/B runs are
short, so that cost would dominate.

    python -m benchmarks.bench_client   # driven by benchmarks.serve_ab
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import traceback


def main() -> None:
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm bench serve")
    add_cli_args(parser)
    answer = sys.stdout
    print(json.dumps({"ready": True}), file=answer, flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        cpu0 = time.process_time()
        with open(command["log"], "w") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            try:
                bench_main(parser.parse_args(command["argv"]))
                code = 0
            except SystemExit as e:  # argparse errors
                code = e.code if isinstance(e.code, int) else 2
            except Exception:
                traceback.print_exc()
                code = 1
        print(json.dumps({"returncode": code, "cpu_s": round(time.process_time() - cpu0, 3)}),
              file=answer, flush=True)


if __name__ == "__main__":
    main()
