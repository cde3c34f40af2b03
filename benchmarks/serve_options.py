"""Serving A/B options: the frozen dataclass :func:`benchmarks.serve_ab.run` takes, and the CLI
(flags unchanged) that fills it."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence

from benchmarks import workloads


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """One serving A/B: the CLI's flags, as attributes of the same names."""

    model: str
    model_shape: str | None = None
    tokenizer: str | None = None
    workload: str = "lognormal"
    n: int = 400
    trace: str | None = None
    trace_start: int = 0
    prefix_caching: str = "off"
    seed: int = 0
    max_len: int | None = None
    output_len: str = "32"
    load_factors: str = "0.5,0.8,1.0,1.2"
    reps: int = 2
    saturation_rate: float | None = None
    ttft_slo_ms: float | None = None
    slo_factor: float = 2.0
    serve_args: str = ""
    prepack_args: str = ""
    aa: bool = False
    first_server: str = "prepack"
    gpu_memory_utilization: float | None = None
    one_server_at_a_time: bool = False
    warmup: int = 8
    warmup_replay: bool = False
    start_timeout: float = 600
    max_duration_s: float = 300
    time_budget_s: float | None = None
    work_dir: str | None = None
    out: str | None = None
    plot: str | None = None

    @property
    def load_factor_list(self) -> list[float]:
        return [float(x) for x in self.load_factors.split(",")]


def _add_workload_flags(parser: argparse.ArgumentParser) -> None:
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


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--serve-args", default="",
                        help="engine arguments for both arms, as one string of vllm serve "
                             "options")
    parser.add_argument("--prepack-args", default="",
                        help="more --prepack-* options for the prepack arm, as one string")
    parser.add_argument("--aa", action="store_true",
                        help="A/A: the second arm (key 'prepack') is a second stock server, "
                             "started and driven as the prepack arm would be: the pairs' "
                             "spread with no scheduler difference (the noise floor)")
    parser.add_argument("--first-server", choices=["prepack", "stock"], default="prepack",
                        help="the arm whose server starts first when stock's saturation is "
                             "given (measured: stock's); the first start on a fresh machine "
                             "also compiles cold. Alternate it over invocations to take the "
                             "start order out of a comparison")
    parser.add_argument("--gpu-memory-utilization", type=float, default=None,
                        help="per arm (default: 0.4 each when both servers are alive on GPU)")
    parser.add_argument("--one-server-at-a-time", action="store_true",
                        help="stop a server when the other arm needs the machine (always on "
                             "without a GPU)")
    parser.add_argument("--warmup", type=int, default=8,
                        help="unmeasured requests after each server start")
    parser.add_argument("--warmup-replay", action="store_true",
                        help="before each server's first measured run, replay that run's trace "
                             "once with other prompts, unmeasured (a server's first replay can "
                             "run slower in either arm, e.g. on CPU)")
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


def parse(argv: Sequence[str] | None, description: str | None) -> ServeOptions:
    """The CLI into :class:`ServeOptions` (``--model-shape`` resolved to its config folder,
    the prefix-caching default chosen by workload)."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_workload_flags(parser)
    _add_server_flags(parser)
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
    return ServeOptions(**vars(args))
