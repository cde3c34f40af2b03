"""The layout of a pack: several prompts' tokens laid end to end in one flat token axis.

Imports no vLLM, and torch only inside the methods that return tensors. Modelled on xformers'
``attn_bias.BlockDiagonalCausalMask`` / ``_SeqLenInfo``: a pack of prompts of lengths
``seqlens`` occupies tokens ``[cu_seqlens[i], cu_seqlens[i + 1])``; every token attends
causally to the tokens of its own prompt and to nothing else. :meth:`PackLayout.materialize`
builds that block-diagonal causal mask as a dense additive bias, for tests only: the runtime
never builds an ``n^2`` mask.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def _as_length(index: int, value: Any) -> int:
    """``value`` as a positive int, else ValueError naming it (bools are refused)."""
    if isinstance(value, bool):
        # ValueError (not TypeError) for every bad input: the documented contract.
        raise ValueError(f"seqlens[{index}] = {value!r} is not an integer length")  # noqa: TRY004
    try:
        length = operator.index(value)
    except TypeError:
        raise ValueError(f"seqlens[{index}] = {value!r} is not an integer length") from None
    if length <= 0:
        raise ValueError(f"seqlens[{index}] = {length} is not a positive length")
    return length


def _cumulative(seqlens: Sequence[int]) -> tuple[int, ...]:
    cu = [0]
    for n in seqlens:
        cu.append(cu[-1] + n)
    return tuple(cu)


@dataclass(frozen=True)
class PackLayout:
    """Prompts of lengths ``seqlens`` packed contiguously, in order, along one token axis.

    Build it with :meth:`from_seqlens`. ``slot_mapping`` (optional, int64, one entry per
    packed token) is the paged-KV-cache slot of each token, as vLLM's ``slot_mapping``.
    Equality and hashing use ``seqlens`` only.
    """

    seqlens: tuple[int, ...]
    cu_seqlens: tuple[int, ...]
    """``(0, seqlens[0], seqlens[0] + seqlens[1], ..., total_tokens)``."""
    max_seqlen: int
    slot_mapping: torch.Tensor | None = field(default=None, compare=False, repr=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_seqlens(
        cls,
        seqlens: Sequence[int],
        slot_mapping: Sequence[int] | torch.Tensor | None = None,
    ) -> PackLayout:
        """Layout of prompts of lengths ``seqlens`` (each > 0, at least one), in that order.

        ``slot_mapping``: optional per-token KV-cache slots, ``total_tokens`` of them.
        """
        if isinstance(seqlens, (str, bytes)) or not isinstance(seqlens, Sequence):
            # A tensor, a generator or a set: take a plain sequence of Python ints only.
            try:
                seqlens = list(seqlens)  # type: ignore[arg-type]
            except TypeError:
                raise ValueError(f"seqlens = {seqlens!r} is not a sequence of lengths") from None
        lengths = tuple(_as_length(i, n) for i, n in enumerate(seqlens))
        if not lengths:
            raise ValueError("seqlens = [] is empty: a pack holds at least one prompt")
        cu = _cumulative(lengths)
        slots = None if slot_mapping is None else _as_slot_mapping(slot_mapping, cu[-1])
        return cls(seqlens=lengths, cu_seqlens=cu, max_seqlen=max(lengths), slot_mapping=slots)

    def __post_init__(self) -> None:
        # Direct construction must agree with from_seqlens.
        if not self.seqlens:
            raise ValueError("seqlens = () is empty: a pack holds at least one prompt")
        for i, n in enumerate(self.seqlens):
            _as_length(i, n)
        if tuple(self.cu_seqlens) != _cumulative(self.seqlens):
            raise ValueError(
                f"cu_seqlens = {self.cu_seqlens!r} is not the running sum of "
                f"seqlens = {self.seqlens!r}"
            )
        if self.max_seqlen != max(self.seqlens):
            raise ValueError(f"max_seqlen = {self.max_seqlen} is not max(seqlens)")
        if self.slot_mapping is not None:
            _check_slot_mapping(self.slot_mapping, self.total_tokens)

    # ------------------------------------------------------------------ scalars
    @property
    def num_seqs(self) -> int:
        return len(self.seqlens)

    @property
    def total_tokens(self) -> int:
        return self.cu_seqlens[-1]

    def __len__(self) -> int:
        return len(self.seqlens)

    def segments(self) -> Iterator[tuple[int, int]]:
        """``(start, end)`` token range of each prompt, in pack order."""
        yield from zip(self.cu_seqlens[:-1], self.cu_seqlens[1:])

    # ------------------------------------------------------------------ tensors
    def cu_seqlens_tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """``cu_seqlens`` as an int32 tensor (vLLM's ``query_start_loc`` for a pure pack)."""
        import torch

        return torch.tensor(self.cu_seqlens, dtype=torch.int32, device=device)

    def seqlens_tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """``seqlens`` as an int32 tensor (vLLM's ``seq_lens`` for fresh prefills)."""
        import torch

        return torch.tensor(self.seqlens, dtype=torch.int32, device=device)

    def segment_ids(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """int64 ``[total_tokens]``: the index of the prompt each token belongs to."""
        import torch

        lengths = torch.tensor(self.seqlens, dtype=torch.int64, device=device)
        ids = torch.arange(self.num_seqs, dtype=torch.int64, device=device)
        return torch.repeat_interleave(ids, lengths, output_size=self.total_tokens)

    def positions(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """int64 ``[total_tokens]``: each token's position in its prompt (restarts at 0)."""
        import torch

        lengths = torch.tensor(self.seqlens, dtype=torch.int64, device=device)
        starts = torch.tensor(self.cu_seqlens[:-1], dtype=torch.int64, device=device)
        offsets = torch.repeat_interleave(starts, lengths, output_size=self.total_tokens)
        return torch.arange(self.total_tokens, dtype=torch.int64, device=device) - offsets

    def materialize(
        self, dtype: torch.dtype | None = None, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """Dense additive mask ``[total, total]``: 0 where query row ``i`` may attend to key
        column ``j`` (same prompt, ``j <= i``), ``-inf`` elsewhere. For tests only."""
        import torch

        dtype = torch.float32 if dtype is None else dtype
        seg = self.segment_ids(device)
        idx = torch.arange(self.total_tokens, device=device)
        allowed = (seg[:, None] == seg[None, :]) & (idx[None, :] <= idx[:, None])
        mask = torch.zeros((self.total_tokens, self.total_tokens), dtype=dtype, device=device)
        return mask.masked_fill_(~allowed, float("-inf"))


def _as_slot_mapping(slot_mapping: Sequence[int] | torch.Tensor, total: int) -> torch.Tensor:
    import torch

    if isinstance(slot_mapping, torch.Tensor):
        slots = slot_mapping
    else:
        values = list(slot_mapping)
        for i, s in enumerate(values):
            if isinstance(s, bool) or not isinstance(s, int):
                try:
                    values[i] = operator.index(s)
                except TypeError:
                    raise ValueError(f"slot_mapping[{i}] = {s!r} is not an integer slot") from None
        slots = torch.tensor(values, dtype=torch.int64)
    _check_slot_mapping(slots, total)
    return slots


def _check_slot_mapping(slots: Any, total: int) -> None:
    import torch

    if not isinstance(slots, torch.Tensor):
        raise ValueError(f"slot_mapping = {slots!r} is not a tensor")  # noqa: TRY004
    if slots.dim() != 1:
        raise ValueError(f"slot_mapping has shape {tuple(slots.shape)}, expected 1-D")
    if slots.dtype.is_floating_point or slots.dtype.is_complex or slots.dtype == torch.bool:
        raise ValueError(f"slot_mapping has dtype {slots.dtype}, expected an integer dtype")
    if slots.numel() != total:
        raise ValueError(
            f"slot_mapping has {slots.numel()} entries, expected total_tokens = {total}"
        )
