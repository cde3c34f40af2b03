"""The prepacking paper's batches: first-fit-decreasing packing of a batch's prompts into
packs (rows), the packed layout, and the dataset cut into batches per method."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vllm_prepack.layout import PackLayout

METHODS = ("padded", "sorted", "prepacked", "prepacked_flat")
DEFAULT_METHODS = ("padded", "sorted", "prepacked")
PACKED_METHODS = ("prepacked", "prepacked_flat")
BASELINES = ("padded", "sorted")


def ffd_pack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit-decreasing: indices of ``lengths`` grouped into packs of at most ``capacity``
    tokens. Longest first (ties in index order); each goes to the first pack it fits in."""
    too_long = [n for n in lengths if n > capacity]
    if too_long:
        raise ValueError(f"prompt of {max(too_long)} tokens exceeds pack capacity {capacity}")
    packs: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        for p, room in enumerate(free):
            if lengths[i] <= room:
                packs[p].append(i)
                free[p] -= lengths[i]
                break
        else:
            packs.append([i])
            free.append(capacity - lengths[i])
    return packs


@dataclass(frozen=True)
class PackedBatch:
    """Prompts of one batch in ``num_packs`` rows of ``pack_len`` tokens.

    ``layout`` covers the flattened rows: the prompts of each pack, then its tail pad as a
    segment of its own. ``places[i]`` is prompt ``i``'s ``(row, start, end)``.
    """

    packs: tuple[tuple[int, ...], ...]
    pack_len: int
    layout: PackLayout
    places: tuple[tuple[int, int, int], ...]

    @property
    def num_packs(self) -> int:
        return len(self.packs)

    @property
    def compute_tokens(self) -> int:
        return self.num_packs * self.pack_len


def pack_batch(lengths: Sequence[int], capacity: int | None = None) -> PackedBatch:
    """FFD-pack ``lengths`` into rows of ``capacity`` (default: the longest prompt)."""
    capacity = max(lengths) if capacity is None else capacity
    packs = ffd_pack(lengths, capacity)
    seqlens: list[int] = []
    places: dict[int, tuple[int, int, int]] = {}
    for row, pack in enumerate(packs):
        start = 0
        for i in pack:
            places[i] = (row, start, start + lengths[i])
            seqlens.append(lengths[i])
            start += lengths[i]
        if start < capacity:
            seqlens.append(capacity - start)
    return PackedBatch(packs=tuple(tuple(p) for p in packs), pack_len=capacity,
                       layout=PackLayout.from_seqlens(seqlens),
                       places=tuple(places[i] for i in range(len(lengths))))


def make_batches(lengths: Sequence[int], batch_size: int, method: str) -> list[list[int]]:
    """Prompt indices of each batch: dataset order, or length order for ``sorted``."""
    order = list(range(len(lengths)))
    if method == "sorted":
        order.sort(key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
