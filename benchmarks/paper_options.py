"""The prepacking paper's options: the frozen dataclass :func:`benchmarks.paper.run` takes, and
the CLI (flags unchanged) that fills it."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks import models, workloads
from benchmarks.paper_bench import DTYPES
from benchmarks.paper_pack import DEFAULT_METHODS, METHODS

KERNELS = ("auto", "fa3", "sdpa")
DEVICES = ("auto", "cpu", "cuda")


@dataclasses.dataclass(frozen=True)
class PaperOptions:
    """One paper benchmark, resolved: model sources, lists parsed, device and dtype chosen."""

    sources: tuple[str, ...]
    model_shape: str | None = None
    model: str | None = None
    workload: tuple[str, ...] = ("mmlu",)
    n: int = 256
    max_len: int | None = None
    batch_sizes: tuple[int, ...] = (4, 8, 16, 32, 64)
    methods: tuple[str, ...] = DEFAULT_METHODS
    reps: int = 3
    dtype: str = "float32"
    device: str = "cpu"
    packed_kernel: str = "auto"
    check_prompts: int = 4
    seed: int = 0
    out: str | None = None
    plot: str | None = None


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _choices(parser: argparse.ArgumentParser, flag: str, values: list[str],
             accepted: Sequence[str]) -> list[str]:
    bad = [v for v in values if v not in accepted]
    if bad or not values:
        parser.error(f"{flag}: unknown value(s) {', '.join(bad) or '(none)'}; accepted: "
                     f"{', '.join(accepted)}")
    return values


def _positive_ints(parser: argparse.ArgumentParser, flag: str, value: str) -> list[int]:
    try:
        values = [int(v) for v in _csv(value)]
    except ValueError:
        values = []
    if not values or min(values) <= 0:
        parser.error(f"{flag}: {value!r} is not a comma-separated list of positive integers")
    return values


def _parser(description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-shape", default=None,
                        help=f"comma-separated, random weights; one of {', '.join(models.SHAPES)}"
                             " (default sheared-llama-1.3b)")
    parser.add_argument("--model", default=None, help="a local model directory instead")
    parser.add_argument("--workload", default="mmlu",
                        help=f"comma-separated; one of {', '.join(workloads.MIXES)}")
    parser.add_argument("--n", type=int, default=256, help="prompts per workload")
    parser.add_argument("--max-len", type=int, default=None, help="cap prompt lengths")
    parser.add_argument("--batch-sizes", default="4,8,16,32,64")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated; of {', '.join(METHODS)}")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dtype", default="auto",
                        help=f"auto (float16 on CUDA, else float32) or {', '.join(DTYPES)}")
    parser.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICES)}")
    parser.add_argument("--packed-kernel", default="auto", help=f"one of {', '.join(KERNELS)}")
    parser.add_argument("--check-prompts", type=int, default=4,
                        help="prompts per run checked against the prompt-alone forward")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the JSON here")
    parser.add_argument("--plot", default=None, help="write the speedup PNG here")
    return parser


def _resolve(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Lists parsed and checked, the model sources, device and dtype chosen (in place)."""
    if args.model and args.model_shape:
        parser.error("--model and --model-shape are exclusive")
    if args.model:
        if not (Path(args.model) / "config.json").exists():
            parser.error(f"--model: no config.json in {args.model}")
        args.sources = [args.model]
    else:
        args.sources = _choices(parser, "--model-shape",
                                _csv(args.model_shape or "sheared-llama-1.3b"), list(models.SHAPES))
    args.workload = _choices(parser, "--workload", _csv(args.workload), list(workloads.MIXES))
    args.methods = _choices(parser, "--methods", _csv(args.methods), METHODS)
    args.batch_sizes = _positive_ints(parser, "--batch-sizes", args.batch_sizes)
    _choices(parser, "--device", [args.device], DEVICES)
    _choices(parser, "--packed-kernel", [args.packed_kernel], KERNELS)
    _choices(parser, "--dtype", [args.dtype], ["auto", *DTYPES])
    for flag, value in (("--n", args.n), ("--reps", args.reps),
                        ("--check-prompts", args.check_prompts), ("--max-len", args.max_len)):
        if value is not None and value <= 0:
            parser.error(f"{flag}: {value} is not a positive integer")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    if args.dtype == "auto":
        args.dtype = "float16" if args.device == "cuda" else "float32"
    args.check_prompts = min(args.check_prompts, args.n)


def parse_args(argv: Sequence[str] | None = None,
               description: str | None = None) -> argparse.Namespace:
    parser = _parser(description)
    args = parser.parse_args(argv)
    _resolve(parser, args)
    return args


def parse(argv: Sequence[str] | None = None, description: str | None = None) -> PaperOptions:
    """The CLI into :class:`PaperOptions`."""
    args = vars(parse_args(argv, description))
    for key in ("sources", "workload", "batch_sizes", "methods"):
        args[key] = tuple(args[key])
    return PaperOptions(**args)
