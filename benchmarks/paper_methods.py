"""The prepacking paper's methods as forwards: padded, length-sorted, prepacked (FFD packs)
and prepacked_flat (one row), each giving every prompt's first token and per-layer K/V; and
the prompt run alone, their reference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks.paper_attention import ATTN_NAME, PLAN_KWARG, make_plan, use_attention
from benchmarks.paper_pack import BASELINES, METHODS, PackedBatch, pack_batch

PAD_ID = 0


@dataclass
class BatchOutput:
    """First greedy token and per-layer ``(K, V)`` (``[kv_heads, len, head_dim]`` views) of
    each prompt, in input order; ``rows x row_len`` tokens were computed."""

    first_tokens: list[int]
    caches: list[list[tuple[torch.Tensor, torch.Tensor]]]
    rows: int
    row_len: int

    @property
    def compute_tokens(self) -> int:
        return self.rows * self.row_len


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _first_tokens(model: Any, hidden: torch.Tensor) -> list[int]:
    return model.get_output_embeddings()(hidden).argmax(-1).tolist()


def _split(cache: Any, places: Sequence[tuple[int, int, int]]) -> list[list[tuple]]:
    return [[(layer.keys[row, :, s:e], layer.values[row, :, s:e]) for layer in cache.layers]
            for row, s, e in places]


def run_padded(model: Any, prompts: Sequence[Sequence[int]]) -> BatchOutput:
    """Left-padded batch, ``attention_mask`` and position ids from the mask."""
    use_attention(model, "sdpa")
    device = _device(model)
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[PAD_ID] * (width - len(p)) + list(p) for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    positions = (mask.cumsum(-1) - 1).clamp_(min=0)
    with torch.inference_mode():
        out = model.base_model(input_ids=ids, attention_mask=mask, position_ids=positions,
                               use_cache=True)
        first = _first_tokens(model, out.last_hidden_state[:, -1])
    places = [(i, width - len(p), width) for i, p in enumerate(prompts)]
    return BatchOutput(first, _split(out.past_key_values, places), len(prompts), width)


def packed_inputs(batch: PackedBatch, prompts: Sequence[Sequence[int]],
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and restarting ``position_ids``, both ``[num_packs, pack_len]``."""
    rows = []
    for pack in batch.packs:
        row = [t for i in pack for t in prompts[i]]
        rows.append(row + [PAD_ID] * (batch.pack_len - len(row)))
    ids = torch.tensor(rows, device=device)
    positions = batch.layout.positions(device).view(batch.num_packs, batch.pack_len)
    return ids, positions


def _packed_forward(model: Any, prompts: Sequence[Sequence[int]], batch: PackedBatch,
                    **kwargs: Any) -> BatchOutput:
    device = _device(model)
    ids, positions = packed_inputs(batch, prompts, device)
    rows = torch.tensor([r for r, _, _ in batch.places], device=device)
    ends = torch.tensor([e - 1 for _, _, e in batch.places], device=device)
    with torch.inference_mode():
        out = model.base_model(input_ids=ids, position_ids=positions, use_cache=True, **kwargs)
        first = _first_tokens(model, out.last_hidden_state[rows, ends])
    return BatchOutput(first, _split(out.past_key_values, batch.places), batch.num_packs,
                       batch.pack_len)


def run_packed(model: Any, prompts: Sequence[Sequence[int]], kernel: str,
               capacity: int | None = None) -> BatchOutput:
    """FFD packs of ``capacity`` (default the longest prompt) with the ``prepack`` attention."""
    use_attention(model, ATTN_NAME)
    batch = pack_batch([len(p) for p in prompts], capacity)
    plan = make_plan(batch.layout, kernel, _device(model))
    return _packed_forward(model, prompts, batch, **{PLAN_KWARG: plan})


def run_packed_hf_mask(model: Any, prompts: Sequence[Sequence[int]],
                       capacity: int | None = None) -> BatchOutput:
    """Control: packs of ``capacity`` (default all prompts in one row) and restarting
    positions through ``sdpa`` with the mask that transformers builds itself under
    ``use_cache=True`` (plain causal across the prompts of a row)."""
    use_attention(model, "sdpa")
    lengths = [len(p) for p in prompts]
    batch = pack_batch(lengths, sum(lengths) if capacity is None else capacity)
    return _packed_forward(model, prompts, batch)


def run_batch(model: Any, method: str, prompts: Sequence[Sequence[int]],
              kernel: str) -> BatchOutput:
    if method in BASELINES:
        return run_padded(model, prompts)
    if method == "prepacked":
        return run_packed(model, prompts, kernel)
    if method == "prepacked_flat":
        return run_packed(model, prompts, kernel, capacity=sum(len(p) for p in prompts))
    raise ValueError(f"unknown method {method!r}; accepted: {', '.join(METHODS)}")


def run_alone(model: Any, prompt: Sequence[int]) -> tuple[int, list[tuple]]:
    """First token and per-layer ``(K, V)`` of ``prompt`` run alone through ``model``."""
    use_attention(model, "sdpa")
    ids = torch.tensor([list(prompt)], device=_device(model))
    with torch.inference_mode():
        out = model(ids, use_cache=True)
    cache = [(layer.keys[0], layer.values[0]) for layer in out.past_key_values.layers]
    return int(out.logits[0, -1].argmax()), cache
