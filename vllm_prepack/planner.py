"""Prefill admission planner: the order of the waiting queue, and which prompts to admit whole.

Pure and stdlib-only (no vLLM, no torch). The scheduler adapter keeps its waiting queue sorted
by :func:`order_key`; each step it walks the head of that order with :func:`plan`, presents the
admitted prompts to vLLM first and the rest of the queue after them, in order. vLLM then
admits the planned prompts whole and gives whatever budget is left to the next request in
order, as a chunk: every step is filled (work-conserving).

Waiting time is counted on the engine's **prefill clock**: the number of prompt tokens the
engine has computed since it started (as SGLang's HRRN counts it). A request's place is fixed
when it arrives:

``stretch`` (default)
    ``deadline = clock at arrival + stretch * cost``, cost = uncached prompt tokens. Requests
    are taken by earliest deadline: a short prompt overtakes a long one that arrived before it
    only while the engine has computed fewer than ``stretch`` times the long prompt's tokens
    since it arrived. Priority rises smoothly with the wait (no aging cliff), the order never
    collapses to arrival order under sustained overload, and no request waits unboundedly:
    once the clock passes its deadline every later arrival is behind it, and a *due* request
    (clock >= deadline) that does not fit whole is chunked before anything behind it.
``fcfs``
    Arrival order; a prompt that does not fit whole is passed over for the ones behind it.
``sjf``
    Fewest uncached tokens first, without aging (for comparison).
``hrrn``
    SGLang's rule (``--schedule-policy hrrn``): highest ``waited / cost`` first, waited in
    prefill-clock tokens, the whole queue re-sorted each step unless more than 128 wait (then
    arrival order), taken in order until one does not fit, which is chunked.

Preempted requests come first, then the order above; under vLLM's priority policy the
priority class comes before everything (vLLM's semantics), the order applies within a class.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

POLICIES = ("stretch", "fcfs", "sjf", "hrrn")
HRRN_SORT_LIMIT = 128
"""SGLang sorts by response ratio only while at most this many requests wait."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """One waiting request, as the planner sees it."""

    key: int
    """The caller's handle, unique per candidate."""
    tokens: int
    """Prompt tokens still to compute (net of the prefix-cache hit), >= 1."""
    cached: int = 0
    """Tokens already computed or cached for this request (prefix-cache hit), >= 0."""
    arrival: float = 0.0
    """Arrival time in seconds (ties, statistics)."""
    clock: int = 0
    """The engine's prefill clock (prompt tokens computed so far) when the request arrived."""
    preempted: bool = False
    priority: int = 0
    """vLLM's request priority (lower first); 0 for every request under FCFS."""
    cap: int = 0
    """vLLM's per-step chunk cap for this request (``long_prefill_token_threshold``; 0: none)."""
    due: bool = False
    """Waited past the tail bound: never passed over (the caller puts it first)."""

    def __post_init__(self) -> None:
        if self.tokens < 1:
            raise ValueError(f"Candidate.tokens must be >= 1, got {self.tokens!r}")
        if self.cached < 0:
            raise ValueError(f"Candidate.cached must be >= 0, got {self.cached!r}")
        if self.cap < 0:
            raise ValueError(f"Candidate.cap must be >= 0, got {self.cap!r}")

    @property
    def charge(self) -> int:
        """Tokens this request takes from one step's budget when admitted (vLLM's cap)."""
        return min(self.tokens, self.cap) if self.cap else self.tokens


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
    step_tokens: int = 0
    """Tokens a prefill can get in a later step (the token budget less the decoding
    requests' tokens); 0: as ``tokens``."""
    whole_prompt: bool = False
    """vLLM admits a waiting request only if its whole prompt fits the free blocks, whatever
    it schedules of it (``scheduler_reserve_full_isl``)."""

    def __post_init__(self) -> None:
        for name, low in (("tokens", 0), ("slots", 0), ("blocks", 0), ("block_size", 1),
                          ("step_tokens", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"Budget.{name} must be >= {low}, got {getattr(self, name)!r}")


@dataclass(frozen=True, slots=True)
class Plan:
    """What to present to vLLM first this step."""

    admit: tuple[int, ...]
    """Candidate keys admitted whole, in the order to present them."""
    chunk: int | None
    """The candidate vLLM chunks with the budget that is left (presented after ``admit``)."""
    tokens: int
    """Planned tokens of ``admit``."""
    blocks: int
    """Planned new KV blocks of ``admit``."""
    scanned: int
    """Candidates looked at."""


def check_policy(policy: str, stretch: float) -> None:
    if policy not in POLICIES:
        raise ValueError(f"invalid policy {policy!r}; accepted: {', '.join(POLICIES)}")
    number = isinstance(stretch, (int, float)) and not isinstance(stretch, bool)
    if not (number and 0 <= stretch < float("inf")):  # NaN fails too
        raise ValueError(f"invalid stretch {stretch!r}; accepted: a finite number >= 0")


def order_key(c: Candidate, policy: str, stretch: float) -> tuple:
    """The candidate's place in the waiting queue (smallest first); fixed while it waits.

    ``hrrn`` has no fixed place (its ratio grows with the clock): its queue is kept in arrival
    order and re-sorted each step by :func:`hrrn_order`."""
    if policy == "stretch":
        place: float = c.clock + stretch * c.tokens
    elif policy == "sjf":
        place = c.tokens
    else:  # fcfs, hrrn
        place = c.arrival
    return (c.priority, not c.preempted, place, c.arrival)


def is_due(c: Candidate, policy: str, stretch: float, clock: int) -> bool:
    """A due candidate is never passed over: if it does not fit whole, it is chunked next."""
    if c.due or c.preempted or policy == "hrrn":
        return True
    if policy == "stretch":
        return clock >= c.clock + stretch * c.tokens
    return False


def hrrn_order(candidates: list[Candidate], clock: int) -> list[Candidate]:
    """SGLang's HRRN order: highest ``waited / cost`` first (waited in prefill-clock tokens),
    ties by arrival; arrival order while more than :data:`HRRN_SORT_LIMIT` wait. Preempted
    requests and priority classes keep their place in front, as in :func:`order_key`."""
    if len(candidates) > HRRN_SORT_LIMIT:
        return candidates
    return sorted(candidates, key=lambda c: (c.priority, not c.preempted,
                                             -max(0, clock - c.clock) / c.tokens, c.arrival))


def blocks_needed(cached: int, new_tokens: int, block_size: int) -> int:
    """New KV blocks to hold ``cached + new_tokens`` tokens when ``cached`` are already held."""
    return -(-(cached + new_tokens) // block_size) + (-cached // block_size)


def chunk_floor(c: Candidate, tokens: int, step_tokens: int) -> int:
    """The fewest tokens ``c`` must get now (``tokens`` free) to finish its prompt in as few
    steps as taking all it can now would, given ``step_tokens`` per later step (>= 1)."""
    per_step = max(1, min(step_tokens, c.cap) if c.cap else step_tokens)
    now = min(tokens, per_step)
    later_steps = -(-(c.tokens - now) // per_step)
    return max(1, c.tokens - later_steps * per_step)


def plan(
    ordered: Iterable[Candidate],
    budget: Budget,
    *,
    policy: str = "stretch",
    stretch: float = 2.0,
    clock: int = 0,
    lookahead: int = 128,
    oldest: Candidate | None = None,
) -> Plan:
    """Walk ``ordered`` (the queue order) and admit each candidate that fits whole; the first
    one that does not is the chunk. The candidates behind it are admitted only within its
    slack: they leave it a slot and :func:`chunk_floor` tokens, so it completes in as few
    steps as if it had taken the whole budget. A due candidate that does not fit ends the
    walk. At most ``lookahead`` candidates are looked at.

    ``oldest`` (the request vLLM's FCFS queue would take first): until the walk reaches it,
    no candidate takes the free KV blocks it needs to be admitted (:func:`oldest_reserve`);
    one that would is not admitted, and the oldest is the chunk instead, as under FCFS."""
    tokens, slots, blocks = budget.tokens, budget.slots, budget.blocks
    admit: list[int] = []
    chunk: Candidate | None = None
    used = used_blocks = scanned = 0
    slot_reserve = token_reserve = 0  # kept for the chunk, once there is one
    kv_reserve = oldest_reserve(oldest, budget)  # kept for the oldest, until it is reached
    for c in ordered:
        if slots <= slot_reserve or tokens <= token_reserve or scanned >= lookahead:
            break
        if chunk is not None and c.priority != chunk.priority:
            break  # never past a request of a higher priority class (vLLM's semantics)
        scanned += 1
        if oldest is not None and c.key == oldest.key:
            kv_reserve = 0
        charge = c.charge
        fits = charge <= tokens - token_reserve
        gate = admission_blocks(c, budget, charge) if fits else blocks + 1
        if gate <= blocks - kv_reserve:
            need = blocks_needed(c.cached, charge, budget.block_size)
            admit.append(c.key)
            tokens -= charge
            slots -= 1
            blocks -= need
            used += charge
            used_blocks += need
            continue
        if kv_reserve and gate <= blocks:  # only the oldest's blocks keep it out
            chunk, kv_reserve = oldest, 0
            break
        if chunk is None:
            chunk, slot_reserve = c, 1
            token_reserve = chunk_floor(c, tokens, budget.step_tokens or budget.tokens)
        if is_due(c, policy, stretch, clock):
            break
    if kv_reserve and chunk is not None and (
            admission_blocks(chunk, budget, tokens) > blocks - kv_reserve):
        chunk = oldest  # vLLM fills the step with a chunk: the oldest's, not one that starves it
    return Plan(tuple(admit), None if chunk is None else chunk.key, used, used_blocks, scanned)


def oldest_reserve(oldest: Candidate | None, budget: Budget) -> int:
    """The free KV blocks the oldest waiting request needs to be admitted first: its whole
    prompt's under ``budget.whole_prompt`` (vLLM's admission gate), else those of the chunk
    vLLM would give it (its prompt, up to the step's free tokens); 0 without one."""
    return 0 if oldest is None else admission_blocks(oldest, budget, budget.tokens)


def admission_blocks(c: Candidate, budget: Budget, tokens: int) -> int:
    """The free KV blocks vLLM needs to start ``c`` with ``tokens`` free: its whole prompt's
    under ``budget.whole_prompt``, else those of its chunk."""
    new = c.tokens if budget.whole_prompt else min(c.charge, tokens)
    return blocks_needed(c.cached, new, budget.block_size)
