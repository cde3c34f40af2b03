"""The prepacking paper's KV check: every method's first tokens and per-layer K/V against each
prompt run alone, and the control that a plain causal mask over packs is caught."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.paper_methods import (
    BatchOutput,
    run_alone,
    run_batch,
    run_packed_hf_mask,
)
from benchmarks.paper_pack import make_batches


def kv_errors(out: BatchOutput, refs: Sequence[tuple[int, list[tuple]]]) -> list[float]:
    """Max |K/V difference| to the prompt-alone cache, per prompt."""
    errors = []
    for layers, (_, ref) in zip(out.caches, refs):
        err = 0.0
        for (k, v), (rk, rv) in zip(layers, ref):
            err = max(err, (k.float() - rk.float()).abs().max().item(),
                      (v.float() - rv.float()).abs().max().item())
        errors.append(err)
    return errors


def _summary(out: BatchOutput, refs: Sequence[tuple[int, list[tuple]]], atol: float) -> dict:
    errors = kv_errors(out, refs)
    agree = [a == r for a, (r, _) in zip(out.first_tokens, refs)]
    return {"max_kv_abs_err": max(errors), "per_prompt_kv_abs_err": errors,
            "first_token_agreement": sum(agree) / len(agree), "atol": atol,
            "within_atol": max(errors) <= atol}


def check_methods(model: Any, prompts: Sequence[Sequence[int]], methods: Sequence[str],
                  kernel: str, atol: float) -> dict:
    """Each method's caches and first tokens on ``prompts`` (one batch) against each prompt
    alone. ``prepacked_flat`` is always checked: its one row holds several prompts even where
    the longest prompt leaves no room beside it in a ``prepacked`` pack."""
    refs = [run_alone(model, p) for p in prompts]
    ref_scale = max(max(k.float().abs().max().item(), v.float().abs().max().item())
                    for _, layers in refs for k, v in layers)
    result: dict[str, Any] = {"prompts": len(prompts), "lengths": [len(p) for p in prompts],
                              "max_abs_kv_value": ref_scale, "methods": {}}
    for method in dict.fromkeys([*methods, "prepacked_flat"]):
        order = make_batches([len(p) for p in prompts], len(prompts), method)[0]
        out = run_batch(model, method, [prompts[i] for i in order], kernel)
        result["methods"][method] = {**_summary(out, [refs[i] for i in order], atol),
                                     "rows": out.rows, "row_len": out.row_len}
    control = _summary(run_packed_hf_mask(model, prompts), refs, atol)
    result["causal_mask_control"] = {
        **control, "note": "all prompts in one row through sdpa with transformers' own mask "
                           "(use_cache=True): expected to differ for every prompt but the first"}
    return result
