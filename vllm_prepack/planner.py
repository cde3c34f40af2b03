"""Prefill admission planner: which waiting requests to admit this step, and how many tokens each.

Pure and stdlib-only (no vLLM, no torch). The scheduler adapter turns its waiting queue into
:class:`Candidate` s and the step's free resources into a :class:`Budget`, calls :func:`plan`,
and presents the admitted requests to the engine in the order of :attr:`Plan.admit`.

A plan is built in three passes:

1. The aging head: preempted requests (queue order), then requests that have waited
   ``max_wait_s`` (oldest first). Each is admitted whole while it fits; the first one that does
   not is never overtaken: it is split (``split="fill"``, or when it alone exceeds the step's
   full token budget) or waited for (``split="whole"``), and nothing else is admitted.
2. The young requests, by policy. ``ttft``: shortest first, each one that fits whole is
   admitted and each one that does not is skipped (no head-of-line blocking); with ``whole``,
   when that leaves more than 5% of the free budget unused, the largest-first pack (first-fit
   decreasing for one step) is taken instead if it fills more, so that long prompts still
   pack tightly. ``fcfs``:
   queue order, first fit. Requests sharing a cached prefix stay together, at the place of
   the group's first member.
3. A split to use the rest: ``fill`` splits the first young request left out; ``whole`` splits
   only a prompt larger than the step's full token budget (it can never run whole), or one
   the engine chunks anyway (``Candidate.chunked``), into the gap left by the whole ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from operator import attrgetter

POLICIES = ("ttft", "fcfs")
SPLITS = ("whole", "fill")


@dataclass(frozen=True, slots=True)
class Candidate:
    """One waiting request, as the planner sees it."""

    key: int
    """The caller's handle, unique per candidate."""
    tokens: int
    """Prompt tokens still to compute (net of the prefix-cache hit), >= 1."""
    cached: int
    """Tokens already computed or cached for this request (prefix-cache hit), >= 0."""
    arrival: float
    """Arrival time in seconds, on the clock of ``now``."""
    preempted: bool = False
    prefix: int | None = None
    """Group key: requests sharing a cached prefix carry the same key."""
    chunked: bool = False
    """``tokens`` is a chunk of a longer prompt (the engine caps it per step): the prompt is
    split anyway, so ``whole`` may cut it further to fill the step."""

    def __post_init__(self) -> None:
        if self.tokens < 1:
            raise ValueError(f"Candidate.tokens must be >= 1, got {self.tokens!r}")
        if self.cached < 0:
            raise ValueError(f"Candidate.cached must be >= 0, got {self.cached!r}")


@dataclass(frozen=True, slots=True)
class Budget:
    """The free resources of one step."""

    tokens: int
    """Free token budget of this step, >= 0."""
    slots: int
    """Free sequence slots, >= 0."""
    blocks: int
    """Free KV-cache blocks, >= 0."""
    block_size: int
    """Tokens per KV block, >= 1."""
    max_tokens: int
    """The full per-step token budget (``max_num_batched_tokens``), >= ``tokens``."""

    def __post_init__(self) -> None:
        for name, low in (("tokens", 0), ("slots", 0), ("blocks", 0), ("block_size", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"Budget.{name} must be >= {low}, got {getattr(self, name)!r}")
        if self.max_tokens < self.tokens:
            raise ValueError(
                f"Budget.max_tokens must be >= Budget.tokens ({self.tokens}), "
                f"got {self.max_tokens!r}"
            )


@dataclass(frozen=True, slots=True)
class Plan:
    """What to admit this step."""

    admit: tuple[int, ...]
    """Candidate keys, in the order they are to be presented to the engine."""
    partial: int | None
    """The one admitted candidate that gets only part of its tokens (the last of ``admit``)."""
    partial_tokens: int
    """Tokens planned for ``partial`` (0 if none)."""
    tokens: int
    """Total planned tokens (whole candidates plus ``partial_tokens``)."""
    blocks: int
    """Total planned new KV blocks."""
    aged: int
    """How many of ``admit`` (its first entries) were admitted as the aging head."""


def blocks_needed(cached: int, new_tokens: int, block_size: int) -> int:
    """New KV blocks to hold ``cached + new_tokens`` tokens when ``cached`` are already held."""
    return -(-(cached + new_tokens) // block_size) + (-cached // block_size)


def plan(
    candidates: Sequence[Candidate],
    budget: Budget,
    now: float,
    *,
    policy: str = "ttft",
    split: str = "whole",
    max_wait_s: float = 5.0,
    lookahead: int = 1024,
) -> Plan:
    """Plan this step's prefill admissions from ``candidates`` (given in queue order)."""
    _check_options(policy, split, max_wait_s, lookahead)
    window = list(islice(candidates, lookahead))
    _check_keys(window)
    head, young = _split_aged(window, now, max_wait_s)
    pack = _Pack(budget)

    for c in head:
        need = pack.fits(c)
        if need < 0:
            if split == "fill" or c.tokens > budget.max_tokens or c.chunked:
                pack.take_part(c)
            return pack.plan(aged=len(pack.keys))
        pack.take(c, c.tokens, need)
    aged = len(pack.keys)

    if policy == "ttft":
        order = _grouped(_shortest_first(young))
        if split == "whole":
            pack, left_out = _shortest_or_fullest(pack, order, young)
        else:  # the split fills the step anyway: shortest first serves the most
            left_out = pack.take_whole(order)
    else:
        order = _grouped(young)
        left_out = pack.take_whole(order)
    if split == "fill":
        target = left_out
    else:  # whole: only a prompt that alone exceeds the pack is split, into the gap
        taken = set(pack.keys)
        target = next(
            (c for c in order
             if (c.tokens > budget.max_tokens or c.chunked) and c.key not in taken), None
        )
    if target is not None:
        pack.take_part(target)
    return pack.plan(aged=aged)


SWITCH_FILL = 0.95
"""``ttft`` packs shortest-first unless that fills less than this share of the free token
budget; then it takes the largest-first pack if that one fills more."""


def _shortest_or_fullest(
    pack: _Pack, order: list[Candidate], young: list[Candidate]
) -> tuple[_Pack, Candidate | None]:
    """Shortest-first serves the most first tokens; once only prompts that pack badly that
    way are left (a large gap remains, and ``whole`` does not split to fill it),
    largest-first (first-fit decreasing for one bin) fills the step instead, so that the
    queue drains in fewer steps."""
    free = pack.tokens
    start = pack.used
    fullest = pack.copy()
    left_out = pack.take_whole(order)
    if pack.used - start >= SWITCH_FILL * free:
        return pack, left_out
    other_left_out = fullest.take_whole(_grouped(_largest_first(young)))
    if fullest.used > pack.used:
        return fullest, other_left_out
    return pack, left_out


_TOKENS = attrgetter("tokens")
_ARRIVAL = attrgetter("arrival")
_KEY = attrgetter("key")


def _check_options(policy: str, split: str, max_wait_s: float, lookahead: int) -> None:
    if policy not in POLICIES:
        raise ValueError(f"invalid policy {policy!r}; accepted: {', '.join(POLICIES)}")
    if split not in SPLITS:
        raise ValueError(f"invalid split {split!r}; accepted: {', '.join(SPLITS)}")
    number = isinstance(max_wait_s, (int, float)) and not isinstance(max_wait_s, bool)
    if not (number and max_wait_s > 0):  # NaN is not > 0; inf (never aged) is accepted
        raise ValueError(f"invalid max_wait_s {max_wait_s!r}; accepted: a number of seconds > 0")
    if isinstance(lookahead, bool) or not isinstance(lookahead, int) or lookahead < 1:
        raise ValueError(f"invalid lookahead {lookahead!r}; accepted: an integer >= 1")


def _check_keys(window: list[Candidate]) -> None:
    if len({c.key for c in window}) != len(window):
        seen: set[int] = set()
        dup = next(c.key for c in window if c.key in seen or seen.add(c.key))
        raise ValueError(f"duplicate candidate key {dup!r}; accepted: keys unique per candidate")


def _split_aged(
    window: list[Candidate], now: float, max_wait_s: float
) -> tuple[list[Candidate], list[Candidate]]:
    """(aging head, young): preempted in queue order, then the aged oldest first; the rest."""
    preempted: list[Candidate] = []
    aged: list[Candidate] = []
    young: list[Candidate] = []
    for c in window:
        if c.preempted:
            preempted.append(c)
        elif now - c.arrival >= max_wait_s:
            aged.append(c)
        else:
            young.append(c)
    aged.sort(key=_ARRIVAL)  # stable: queue order among equal arrivals
    return preempted + aged, young


def _shortest_first(young: list[Candidate]) -> list[Candidate]:
    """``young`` by (tokens, arrival, key): three stable single-key sorts, cheaper than tuples."""
    order = sorted(young, key=_KEY)
    order.sort(key=_ARRIVAL)
    order.sort(key=_TOKENS)
    return order


def _largest_first(young: list[Candidate]) -> list[Candidate]:
    """``young`` by (-tokens, arrival, key): the oldest first among equal lengths."""
    order = sorted(young, key=_KEY)
    order.sort(key=_ARRIVAL)
    order.sort(key=_TOKENS, reverse=True)
    return order


def _grouped(order: list[Candidate]) -> list[Candidate]:
    """``order`` with each prefix group moved together to the place of its first member."""
    groups: dict[int, list[Candidate]] = {}
    for c in order:
        if c.prefix is not None:
            groups.setdefault(c.prefix, []).append(c)
    if not groups:
        return order
    out: list[Candidate] = []
    for c in order:
        if c.prefix is None:
            out.append(c)
        elif (members := groups.pop(c.prefix, None)) is not None:
            out.extend(members)
    return out


class _Pack:
    """The running state of one plan: what is left of the budget and what was taken."""

    __slots__ = (
        "block_size",
        "blocks",
        "keys",
        "partial",
        "partial_tokens",
        "slots",
        "tokens",
        "used",
        "used_blocks",
    )

    def __init__(self, budget: Budget) -> None:
        self.tokens = budget.tokens
        self.slots = budget.slots
        self.blocks = budget.blocks
        self.block_size = budget.block_size
        self.keys: list[int] = []
        self.used = 0
        self.used_blocks = 0
        self.partial: int | None = None
        self.partial_tokens = 0

    def fits(self, c: Candidate) -> int:
        """Blocks ``c`` needs to be admitted whole, or -1 if it does not fit."""
        if c.tokens > self.tokens or self.slots < 1:
            return -1
        need = blocks_needed(c.cached, c.tokens, self.block_size)
        return need if need <= self.blocks else -1

    def copy(self) -> _Pack:
        other = _Pack.__new__(_Pack)
        for name in self.__slots__:
            value = getattr(self, name)
            setattr(other, name, list(value) if isinstance(value, list) else value)
        return other

    def take(self, c: Candidate, tokens: int, blocks: int) -> None:
        self.keys.append(c.key)
        self.tokens -= tokens
        self.slots -= 1
        self.blocks -= blocks
        self.used += tokens
        self.used_blocks += blocks

    def take_whole(self, order: list[Candidate]) -> Candidate | None:
        """Admit each of ``order`` that fits whole; return the first left out (None if none)."""
        left_out = None
        if self.slots < 1 or self.tokens < 1:
            return None
        for c in order:
            if c.tokens <= self.tokens and (need := self.fits(c)) >= 0:
                self.take(c, c.tokens, need)
                if self.slots < 1 or self.tokens < 1:
                    break
            elif left_out is None:
                left_out = c
        return left_out

    def take_part(self, c: Candidate) -> None:
        """Admit as many of ``c``'s tokens as fit (none if not even one does)."""
        if self.slots < 1:
            return
        held = -(-c.cached // self.block_size) * self.block_size
        n = min(c.tokens, self.tokens, held + self.blocks * self.block_size - c.cached)
        if n >= 1:
            self.take(c, n, blocks_needed(c.cached, n, self.block_size))
            self.partial, self.partial_tokens = c.key, n

    def plan(self, aged: int) -> Plan:
        return Plan(tuple(self.keys), self.partial, self.partial_tokens, self.used,
                    self.used_blocks, aged)
