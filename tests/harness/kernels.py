"""What the kernel tests share: tolerances, hypothesis settings, random packs, and the paged
KV-cache layout of a config-only tiny Llama for comparisons against vLLM's CPU backend.
Imports no vLLM."""

from __future__ import annotations

import itertools
import math

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

ATOL, RTOL = 1e-5, 1e-4


def hypothesis_settings(max_examples: int):
    return settings(
        max_examples=max_examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@st.composite
def packs(draw, max_total: int, max_prompts: int = 64) -> list[int]:
    """Prompt lengths: 1..max_prompts prompts, each >= 1, summing to at most max_total."""
    n = draw(st.integers(1, min(max_prompts, max_total)))
    total = draw(st.integers(n, max_total))
    rng = draw(st.randoms(use_true_random=False))
    cuts = sorted(rng.sample(range(1, total), n - 1))
    bounds = [0, *cuts, total]
    return [b - a for a, b in itertools.pairwise(bounds)]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    err = (actual.double() - expected.double()).abs().max().item()
    assert torch.allclose(actual, expected, atol=ATOL, rtol=RTOL), (
        f"{what}: max abs error {err:.3e} (atol {ATOL}, rtol {RTOL})"
    )


# -- a config-only tiny Llama and a paged KV cache for vLLM's CPU attention backend ------------

BLOCK_SIZE = 32  # CPU_ATTN needs a multiple of 32

TINY_LLAMA_CONFIG = """{"architectures": ["LlamaForCausalLM"], "model_type": "llama",
 "hidden_size": 512, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 64,
 "intermediate_size": 256, "num_hidden_layers": 2, "vocab_size": 256,
 "max_position_embeddings": 8192, "rms_norm_eps": 1e-05, "torch_dtype": "float32"}"""


def paged_batch(seqlens: list[int], seed: int):
    """Scattered block tables for fresh prefills, and the slot mapping they imply."""
    g = torch.Generator().manual_seed(seed)
    blocks_per_req = [math.ceil(n / BLOCK_SIZE) for n in seqlens]
    num_blocks = sum(blocks_per_req) + 4  # a few never-touched blocks
    perm = torch.randperm(num_blocks, generator=g).tolist()
    block_table = torch.zeros(len(seqlens), max(blocks_per_req), dtype=torch.int32)
    slots: list[int] = []
    used = 0
    for i, (n, nb) in enumerate(zip(seqlens, blocks_per_req)):
        block_table[i, :nb] = torch.tensor(perm[used : used + nb], dtype=torch.int32)
        used += nb
        slots.extend(
            perm[used - nb + p // BLOCK_SIZE] * BLOCK_SIZE + p % BLOCK_SIZE for p in range(n)
        )
    return block_table, slots, num_blocks
