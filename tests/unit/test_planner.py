"""Properties and examples of the pure admission planner (no vLLM, no torch, no engine)."""

from __future__ import annotations

import ast
import bisect
import dataclasses
import inspect
import itertools
import os
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vllm_prepack.config import PrepackConfig, PrepackConfigError
from vllm_prepack.planner import (
    HRRN_SORT_LIMIT,
    POLICIES,
    Budget,
    Candidate,
    Plan,
    admission_blocks,
    blocks_needed,
    check_policy,
    chunk_floor,
    hrrn_order,
    is_due,
    oldest_reserve,
    order_key,
    plan,
)

# 300 examples per property in make test; make test-fast sets fewer (PREPACK_PROPERTY_EXAMPLES).
PROPERTY = settings(derandomize=True, deadline=None,
                    max_examples=int(os.environ.get("PREPACK_PROPERTY_EXAMPLES", "300")))
BIG = 10**9


# -- scenarios ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    candidates: list[Candidate]
    budget: Budget
    policy: str
    stretch: float
    clock: int
    lookahead: int
    queue: bool
    """True: ``candidates`` is the waiting queue's order (order_key, or hrrn_order)."""

    @property
    def kwargs(self) -> dict:
        return {"policy": self.policy, "stretch": self.stretch, "clock": self.clock,
                "lookahead": self.lookahead}

    def run(self, ordered=None) -> Plan:
        return plan(self.candidates if ordered is None else ordered, self.budget, **self.kwargs)

    def due(self, c: Candidate) -> bool:
        """The spec of a due candidate: preempted; every one under hrrn; under stretch once
        the clock reached its deadline (clock at arrival + stretch x uncached tokens)."""
        if c.preempted or self.policy == "hrrn":
            return True
        return self.policy == "stretch" and self.clock >= c.clock + self.stretch * c.tokens


def queue_order(candidates: list[Candidate], policy: str, stretch: float,
                clock: int) -> list[Candidate]:
    """The order the scheduler adapter walks: its queue sorted by order_key (and each step
    re-sorted by hrrn_order under hrrn)."""
    ordered = sorted(candidates, key=lambda c: order_key(c, policy, stretch))
    return hrrn_order(ordered, clock) if policy == "hrrn" else ordered


@st.composite
def scenarios(draw, queue: bool | None = None, priorities: bool = True):
    """Short and long prompts, prefix-cache hits, chunk caps, preempted requests, priority
    classes, arrivals spread over the prefill clock."""
    n = draw(st.integers(0, 40))
    keys = draw(st.lists(st.integers(-1000, 1000), unique=True, min_size=n, max_size=n))
    clock = draw(st.sampled_from([0, 0, 1000]) | st.integers(0, 50_000))
    short = st.integers(1, 64)
    candidates = []
    for i, key in enumerate(keys):
        tokens = draw(short | short | st.integers(200, 3000))
        candidates.append(Candidate(
            key=key,
            tokens=tokens,
            cached=draw(st.sampled_from([0, 0, 16]) | st.integers(0, 100)),
            arrival=float(i) if draw(st.booleans()) else draw(st.floats(0, 100)),
            clock=draw(st.sampled_from([0, clock]) | st.integers(0, clock)),
            preempted=draw(st.integers(0, 99)) < 5,
            priority=draw(st.sampled_from([0, 0, 0, 1, -1])) if priorities else 0,
            cap=draw(st.sampled_from([0, 0, 0, 256]) | st.integers(1, 600)),
        ))
    policy = draw(st.sampled_from(POLICIES))
    stretch = draw(st.sampled_from([0.0, 0.5, 1.0, 8.0]) | st.floats(0, 20))
    if queue is None:
        queue = draw(st.booleans())
    if queue:
        candidates = queue_order(candidates, policy, stretch, clock)
    budget = Budget(
        tokens=draw(st.integers(0, 4000) | st.integers(500, 4000)),
        slots=draw(st.integers(0, 12) | st.just(64)),
        blocks=draw(st.integers(0, 300) | st.just(BIG)),
        block_size=draw(st.sampled_from([1, 3, 16, 32])),
    )
    return Scenario(candidates, budget, policy, stretch, clock,
                    lookahead=draw(st.integers(1, n + 3) | st.just(128)), queue=queue)


# -- helpers -----------------------------------------------------------------------------------


def fits(c: Candidate, tokens: int, slots: int, blocks: int, block_size: int) -> bool:
    return (slots >= 1 and c.charge <= tokens
            and blocks_needed(c.cached, c.charge, block_size) <= blocks)


def walk(s: Scenario, p: Plan):
    """Each scanned candidate with the room it could take (tokens, slots, blocks) when the walk
    came to it: what the candidates admitted before it left, less what is kept for the chunk
    once there is one (one slot and ``chunk_floor`` tokens)."""
    admitted = set(p.admit)
    tokens, slots, blocks = s.budget.tokens, s.budget.slots, s.budget.blocks
    keep_tokens = keep_slots = 0
    for c in s.candidates[: p.scanned]:
        yield c, (tokens - keep_tokens, slots - keep_slots, blocks)
        if c.key in admitted:
            tokens -= c.charge
            slots -= 1
            blocks -= blocks_needed(c.cached, c.charge, s.budget.block_size)
        elif not keep_slots:
            keep_slots = 1
            keep_tokens = chunk_floor(c, tokens, s.budget.step_tokens or s.budget.tokens)


def reserve(s: Scenario, p: Plan) -> tuple[int, int]:
    """(tokens, slots) kept for the chunk at the end of the walk."""
    if p.chunk is None:
        return 0, 0
    admitted = set(p.admit)
    tokens = s.budget.tokens
    for c in s.candidates[: p.scanned]:
        if c.key == p.chunk:
            return chunk_floor(c, tokens, s.budget.step_tokens or s.budget.tokens), 1
        if c.key in admitted:
            tokens -= c.charge
    raise AssertionError("the chunk was not scanned")


def room_left(s: Scenario, p: Plan) -> tuple[int, int, int]:
    by_key = {c.key: c for c in s.candidates}
    taken = [by_key[k] for k in p.admit]
    bs = s.budget.block_size
    return (s.budget.tokens - sum(c.charge for c in taken), s.budget.slots - len(taken),
            s.budget.blocks - sum(blocks_needed(c.cached, c.charge, bs) for c in taken))


# -- (b) the budget ------------------------------------------------------------------------------


@PROPERTY
@given(scenarios())
def test_never_over_budget(s: Scenario) -> None:
    p = s.run()
    by_key = {c.key: c for c in s.candidates}
    admitted = [by_key[k] for k in p.admit]
    bs = s.budget.block_size
    assert p.tokens == sum(c.charge for c in admitted) <= s.budget.tokens
    assert p.blocks == sum(blocks_needed(c.cached, c.charge, bs) for c in admitted)
    assert p.blocks <= s.budget.blocks
    assert len(p.admit) <= s.budget.slots


@PROPERTY
@given(st.integers(1, 5000), st.integers(0, 5000))
def test_charge_is_vllms_chunk_cap(tokens: int, cap: int) -> None:
    c = Candidate(1, tokens, cap=cap)
    assert c.charge == (min(tokens, cap) if cap else tokens)


def test_a_capped_prompt_is_admitted_for_its_capped_share() -> None:
    """vLLM schedules at most ``long_prefill_token_threshold`` tokens of a prompt per step: the
    planner charges that, so a prompt longer than the free budget is admitted for its cap."""
    long = Candidate(1, 1000, cap=256)
    short = Candidate(2, 40)
    p = plan([long, short], Budget(tokens=300, slots=8, blocks=BIG, block_size=16),
             policy="fcfs")
    assert (p.admit, p.chunk, p.tokens, p.blocks) == ((1, 2), None, 296, 16 + 3)
    p = plan([Candidate(1, 1000)], Budget(tokens=300, slots=8, blocks=BIG, block_size=16),
             policy="fcfs")
    assert (p.admit, p.chunk, p.tokens) == ((), 1, 0)


# -- (c) nothing lost or duplicated, (d) order ---------------------------------------------------


@PROPERTY
@given(scenarios())
def test_keys_unique_from_the_scanned_window_in_input_order(s: Scenario) -> None:
    p = s.run()
    assert len(set(p.admit)) == len(p.admit)
    assert p.scanned <= min(len(s.candidates), s.lookahead)
    scanned = [c.key for c in s.candidates[: p.scanned]]
    assert set(p.admit) <= set(scanned)
    positions = [scanned.index(k) for k in p.admit]
    assert positions == sorted(positions)  # admit keeps the input order
    if p.chunk is not None:
        assert p.chunk in scanned and p.chunk not in p.admit


@PROPERTY
@given(scenarios())
def test_deterministic_and_blind_past_the_lookahead(s: Scenario) -> None:
    p = s.run()
    assert p == s.run(tuple(s.candidates)) == s.run(iter(s.candidates))
    assert s.run(s.candidates[: s.lookahead]) == p
    assert s.run(s.candidates[: p.scanned]) == p


# -- (a) work conservation -----------------------------------------------------------------------


@PROPERTY
@given(scenarios())
def test_nothing_that_fits_whole_is_left_out(s: Scenario) -> None:
    """Every scanned candidate left out did not fit whole in what the ones admitted before it
    left; the chunk is the first one left out."""
    p = s.run()
    admitted = set(p.admit)
    left_out = []
    for c, room in walk(s, p):
        if c.key not in admitted:
            assert not fits(c, *room, s.budget.block_size), (c, room)
            left_out.append(c.key)
        else:
            assert fits(c, *room, s.budget.block_size)
    assert p.chunk == (left_out[0] if left_out else None)


@PROPERTY
@given(scenarios())
def test_the_walk_ends_only_at_a_due_candidate_or_when_the_step_is_full(s: Scenario) -> None:
    p = s.run()
    admitted = set(p.admit)
    scanned = s.candidates[: p.scanned]
    # A due candidate that does not fit is the last one looked at: nothing behind it jumps it.
    for c in scanned[:-1]:
        assert c.key in admitted or not s.due(c), c
    tokens, slots, _ = room_left(s, p)
    keep_tokens, keep_slots = reserve(s, p)
    ended_at_due = bool(scanned) and scanned[-1].key not in admitted and s.due(scanned[-1])
    if p.scanned < min(len(s.candidates), s.lookahead):
        by_key = {c.key: c for c in s.candidates}
        at_class_end = p.chunk is not None and (
            s.candidates[p.scanned].priority != by_key[p.chunk].priority)
        assert ended_at_due or at_class_end or tokens <= keep_tokens or slots <= keep_slots
    if ended_at_due:
        # The queue puts due requests first within a priority class: the one that ended the
        # walk is the chunk, unless a request of a higher class was passed over.
        last = scanned[-1]
        if s.queue:
            chunk = next(c for c in scanned if c.key == p.chunk)
            assert chunk is last or chunk.priority < last.priority, (chunk, last)


@PROPERTY
@given(scenarios(queue=True, priorities=False))
def test_in_the_queue_a_due_candidate_that_does_not_fit_is_the_chunk(s: Scenario) -> None:
    p = s.run()
    admitted = set(p.admit)
    for c in s.candidates[: p.scanned]:
        if c.key not in admitted and s.due(c):
            assert p.chunk == c.key
            assert c is s.candidates[p.scanned - 1]
            break


@PROPERTY
@given(scenarios())
def test_is_due_matches_the_spec(s: Scenario) -> None:
    for c in s.candidates:
        assert is_due(c, s.policy, s.stretch, s.clock) == s.due(c)
        if s.policy in ("fcfs", "sjf"):
            assert is_due(c, s.policy, s.stretch, s.clock) == c.preempted


# -- (g) the oldest request's KV blocks ------------------------------------------------------------


@st.composite
def with_oldest(draw):
    """A scenario, vLLM's whole-prompt admission gate on or off, and the request FCFS would
    take first (any candidate; its place in the walk varies)."""
    s = draw(scenarios())
    s = dataclasses.replace(s, budget=dataclasses.replace(s.budget,
                                                          whole_prompt=draw(st.booleans())))
    oldest = draw(st.sampled_from(s.candidates)) if s.candidates else None
    return s, oldest


def _ahead_of(s: Scenario, p: Plan, oldest: Candidate) -> list[Candidate]:
    """The admitted candidates the walk took before it reached ``oldest``."""
    by_key = {c.key: c for c in s.candidates}
    ahead = []
    for k in p.admit:
        if k == oldest.key:
            break
        ahead.append(by_key[k])
    return ahead


@PROPERTY
@given(with_oldest())
def test_nothing_admitted_ahead_of_the_oldest_takes_its_blocks(arg) -> None:
    s, oldest = arg
    if oldest is None:
        return
    p = plan(s.candidates, s.budget, **s.kwargs, oldest=oldest)
    bs = s.budget.block_size
    ahead = _ahead_of(s, p, oldest)
    taken = sum(blocks_needed(c.cached, c.charge, bs) for c in ahead)
    reserve = oldest_reserve(oldest, s.budget)
    assert reserve == admission_blocks(oldest, s.budget, s.budget.tokens)
    if ahead:
        assert taken + reserve <= s.budget.blocks, (taken, reserve)
    assert len(set(p.admit)) == len(p.admit) and p.chunk not in p.admit
    assert p.tokens <= s.budget.tokens and p.blocks <= s.budget.blocks
    scanned = {c.key for c in s.candidates[: p.scanned]}
    assert p.chunk is None or p.chunk in scanned or p.chunk == oldest.key


@PROPERTY
@given(with_oldest())
def test_the_oldests_reserve_changes_nothing_without_kv_pressure(arg) -> None:
    s, oldest = arg
    roomy = dataclasses.replace(s, budget=dataclasses.replace(s.budget, blocks=BIG))
    assert plan(roomy.candidates, roomy.budget, **roomy.kwargs, oldest=oldest) == roomy.run()


@PROPERTY
@given(with_oldest())
def test_a_candidate_kept_out_by_the_reserve_makes_the_oldest_the_chunk(arg) -> None:
    """Work conservation with the reserve: every scanned candidate left out either did not
    fit what the ones before it left, or would have taken the oldest's blocks; then the walk
    ends and the oldest is presented next, as FCFS takes it."""
    s, oldest = arg
    if oldest is None:
        return
    p = plan(s.candidates, s.budget, **s.kwargs, oldest=oldest)
    unreserved = plan(s.candidates[: p.scanned], s.budget, **s.kwargs)
    admitted = set(p.admit)
    if p.admit != unreserved.admit[: len(p.admit)] or (
            len(unreserved.admit) > len(p.admit) and oldest.key not in admitted):
        assert p.chunk == oldest.key, (p, unreserved)


# -- (f) the order -------------------------------------------------------------------------------


candidates_st = st.builds(
    Candidate,
    key=st.integers(0, 10**6),
    tokens=st.integers(1, 4000),
    cached=st.integers(0, 200),
    arrival=st.floats(0, 1000),
    clock=st.integers(0, 10**6),
    preempted=st.booleans(),
    priority=st.integers(-2, 2),
)


@PROPERTY
@given(candidates_st, candidates_st, st.sampled_from(POLICIES), st.floats(0, 50))
def test_order_key_priority_class_then_preempted_then_policy(a, b, policy, stretch) -> None:
    ka, kb = order_key(a, policy, stretch), order_key(b, policy, stretch)
    if a.priority != b.priority:
        assert (ka < kb) == (a.priority < b.priority)
    elif a.preempted != b.preempted:
        assert (ka < kb) == a.preempted
    else:
        place = {
            "stretch": lambda c: c.clock + stretch * c.tokens,
            "sjf": lambda c: c.tokens,
            "fcfs": lambda c: c.arrival,
            "hrrn": lambda c: c.arrival,
        }[policy]
        if place(a) != place(b):
            assert (ka < kb) == (place(a) < place(b))
        elif a.arrival != b.arrival:
            assert (ka < kb) == (a.arrival < b.arrival)


@PROPERTY
@given(st.lists(st.tuples(st.integers(0, 100), st.integers(1, 4000)), max_size=30),
       st.integers(0, 10_000))
def test_stretch_zero_is_arrival_order_on_the_clock(steps, start) -> None:
    """Arrivals at a non-decreasing clock: stretch=0 keeps them in arrival order (fcfs),
    whatever their lengths."""
    clock, queue = start, []
    for i, (advance, tokens) in enumerate(steps):
        clock += advance
        queue.append(Candidate(i, tokens, arrival=float(i), clock=clock))
    by_key = sorted(queue, key=lambda c: order_key(c, "stretch", 0.0))
    assert [c.key for c in by_key] == list(range(len(steps)))
    fcfs = sorted(queue, key=lambda c: order_key(c, "fcfs", 0.0))
    assert by_key == fcfs


def test_stretch_lets_a_short_prompt_overtake_for_a_bounded_while() -> None:
    long = Candidate(1, 1000, arrival=0.0, clock=0)  # deadline 8000
    key = order_key(long, "stretch", 8.0)
    early = Candidate(2, 100, arrival=1.0, clock=7000)  # deadline 7800: overtakes
    late = Candidate(3, 100, arrival=2.0, clock=7950)  # deadline 8750: stays behind
    assert order_key(early, "stretch", 8.0) < key < order_key(late, "stretch", 8.0)
    assert not is_due(long, "stretch", 8.0, 7999) and is_due(long, "stretch", 8.0, 8000)
    # Uncached tokens set the deadline: a prefix-cache hit makes a request cheaper.
    warm = Candidate(4, 100, cached=900, arrival=3.0, clock=7100)
    assert order_key(warm, "stretch", 8.0) < key


@PROPERTY
@given(st.lists(candidates_st, max_size=30, unique_by=lambda c: c.key))
def test_sjf_is_fewest_uncached_tokens_first(cs) -> None:
    cs = [Candidate(c.key, c.tokens, c.cached, c.arrival, c.clock) for c in cs]
    ordered = sorted(cs, key=lambda c: order_key(c, "sjf", 8.0))
    assert [(c.tokens, c.arrival) for c in ordered] == sorted((c.tokens, c.arrival) for c in cs)


def sglang_ratio(c: Candidate, clock: int) -> Fraction:
    """SGLang's response ratio: 1 + waited / uncached, waited in prefill-clock tokens."""
    return 1 + Fraction(max(0, clock - c.clock), c.tokens)


@PROPERTY
@given(st.lists(candidates_st, max_size=HRRN_SORT_LIMIT, unique_by=lambda c: c.key),
       st.integers(0, 2 * 10**6))
def test_hrrn_order_is_sglangs_ratio_rule(cs, clock) -> None:
    arrival_order = sorted(cs, key=lambda c: order_key(c, "hrrn", 8.0))
    got = hrrn_order(arrival_order, clock)
    assert sorted(map(id, got)) == sorted(map(id, cs))
    for a, b in itertools.pairwise(got):
        group_a, group_b = (a.priority, not a.preempted), (b.priority, not b.preempted)
        assert group_a <= group_b
        if group_a == group_b:
            ra, rb = sglang_ratio(a, clock), sglang_ratio(b, clock)
            assert ra >= rb, (a, b)
            if ra == rb:
                assert a.arrival <= b.arrival


def test_hrrn_worked_example() -> None:
    """SGLang's own example: after 100,000 prefill tokens an old 100-token request (ratio
    1 + 1000) goes before a new 10-token one (ratio 1); with the same prompt, the request
    with more of it cached has fewer uncached tokens and a higher ratio."""
    long_old = Candidate(1, 100, arrival=0.0, clock=0)
    short_new = Candidate(2, 10, arrival=1.0, clock=100_000)
    assert [c.key for c in hrrn_order([long_old, short_new], 0)] == [1, 2]  # tie: arrival
    assert [c.key for c in hrrn_order([short_new, long_old], 100_000)] == [1, 2]
    more_cached = Candidate(3, 10, cached=90, arrival=2.0, clock=99_000)
    less_cached = Candidate(4, 100, cached=0, arrival=0.5, clock=99_000)
    tie = Candidate(5, 100, cached=0, arrival=0.7, clock=99_000)
    got = hrrn_order([less_cached, tie, more_cached], 100_000)
    assert [c.key for c in got] == [3, 4, 5]


def test_hrrn_keeps_arrival_order_above_the_sort_limit() -> None:
    n = HRRN_SORT_LIMIT + 1
    queue = [Candidate(i, 1000 - i, arrival=float(i), clock=i) for i in range(n)]
    assert hrrn_order(queue, 10**6) == queue  # arrival order, as SGLang falls back to FCFS
    assert [c.key for c in hrrn_order(queue[:-1], 10**6)][0] == n - 2  # sorted at the limit


# -- (e) bounded wait under sustained overload (a simulation over the pure planner) --------------


@dataclass
class Sim:
    """A waiting queue sorted by order_key; each step vLLM first computes what is left of the
    prompt started as a chunk, then gives the budget to the plan: the admitted prompts whole,
    then the chunk with the rest. The prefill clock advances by the tokens computed."""

    budget: int
    policy: str
    stretch: float
    clock: int = 0
    step: int = 0
    queue: list = field(default_factory=list)  # sorted (order_key, key)
    by_key: dict = field(default_factory=dict)
    chunk_left: list = field(default_factory=list)  # [key, tokens left] of started chunks
    started: dict = field(default_factory=dict)  # key -> (step, position in the step)
    seq: itertools.count = field(default_factory=itertools.count)

    def arrive(self, tokens: int) -> Candidate:
        key = next(self.seq)
        c = Candidate(key, tokens, arrival=float(key), clock=self.clock)
        self.by_key[key] = c
        bisect.insort(self.queue, (order_key(c, self.policy, self.stretch), key))
        return c

    def pending(self) -> int:
        return sum(left for _, left in self.chunk_left) + sum(
            self.by_key[k].tokens for _, k in self.queue)

    def run_step(self) -> tuple[list[Candidate], int]:
        """One step; returns the requests started (in vLLM's order) and the tokens computed."""
        free = self.budget
        for entry in self.chunk_left:
            take = min(free, entry[1])
            entry[1] -= take
            free -= take
        self.chunk_left = [e for e in self.chunk_left if e[1]]
        ordered = [self.by_key[k] for _, k in self.queue]
        p = plan(ordered, Budget(tokens=free, slots=BIG, blocks=BIG, block_size=16),
                 policy=self.policy, stretch=self.stretch, clock=self.clock, lookahead=BIG)
        front = [self.by_key[k] for k in p.admit]
        free -= p.tokens
        if p.chunk is not None and free > 0:
            chunk = self.by_key[p.chunk]
            front.append(chunk)
            self.chunk_left.append([chunk.key, chunk.tokens - free])
            free = 0
        gone = {c.key for c in front}
        self.queue = [e for e in self.queue if e[1] not in gone]
        for i, c in enumerate(front):
            self.started[c.key] = (self.step, i)
        computed = self.budget - free
        self.clock += computed
        self.step += 1
        return front, computed


def deadline(c: Candidate, stretch: float) -> float:
    return c.clock + stretch * c.tokens


def check_stretch_bounds(sim: Sim, arrivals, first_phase: int, max_steps: int = 5000) -> Sim:
    """Run ``sim`` with ``arrivals(step)`` each step until every request that arrived in the
    first ``first_phase`` steps has started, checking at every step:

    - the step is full while enough work waits (work conservation);
    - no request that arrived once the clock had passed a waiting request's deadline starts
      before it;
    - a request starts before the clock passes ``deadline + budget + longest prompt + the
      tokens of every request ahead of it in the order`` (all of which arrived before its
      deadline, since later arrivals are behind it).
    """
    stretch, budget = sim.stretch, sim.budget
    order = []  # (order_key, tokens) of every request so far, sorted
    bound: dict[int, float] = {}
    longest = 0
    watched: set[int] = set()
    while sim.step < first_phase or watched:
        assert sim.step < max_steps, "did not start every request"
        for tokens in arrivals(sim.step):
            c = sim.arrive(tokens)
            longest = max(longest, tokens)
            bisect.insort(order, (order_key(c, sim.policy, stretch), tokens))
            if sim.step < first_phase:
                watched.add(c.key)
        # Bounds: once the clock passed a deadline nothing can arrive ahead of that request.
        waiting = [sim.by_key[k] for _, k in sim.queue]
        for c in waiting:
            if c.key not in bound and sim.clock > deadline(c, stretch):
                ahead = bisect.bisect_left(order, (order_key(c, sim.policy, stretch),))
                bound[c.key] = (deadline(c, stretch) + budget + longest
                                + sum(t for _, t in order[:ahead]))
            if c.key in bound:
                assert sim.clock <= bound[c.key], (c, sim.clock, bound[c.key])
        pending = sim.pending()
        front, computed = sim.run_step()
        assert computed == min(budget, pending), (computed, pending)
        # Nothing that arrived after a request's deadline starts before it.
        still = {c.key for c in waiting} - {c.key for c in front}
        for i, q in enumerate(front):
            behind = [c for c in front[i + 1:]] + [sim.by_key[k] for k in still]
            for r in behind:
                assert not (r.arrival < q.arrival and deadline(r, stretch) <= q.clock), (r, q)
        watched -= {c.key for c in front}
    return sim


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    budget=st.integers(16, 256),
    stretch=st.sampled_from([0.0, 0.5, 1.0, 2.0, 8.0]) | st.floats(0, 10),
    pattern=st.lists(st.lists(st.integers(0, 6), min_size=0, max_size=3), min_size=1,
                     max_size=6),
    first_phase=st.integers(1, 12),
)
def test_stretch_bounds_every_wait_under_sustained_overload(budget, stretch, pattern,
                                                            first_phase) -> None:
    """Arrivals of mixed lengths (up to two budgets long) fill more than the budget every
    step, so the queue grows without end; every request still starts, within its bound."""

    def arrivals(step: int) -> list[int]:
        sizes = [budget * k // 3 + step % 7 + 1 for k in pattern[step % len(pattern)]]
        while sum(sizes) <= budget:
            sizes.append(budget // 4 + 1)  # short prompts keep coming
        return sizes

    check_stretch_bounds(Sim(budget, "stretch", stretch), arrivals, first_phase)


def starvation_workload(step: int) -> list[int]:
    """A 600-token prompt first, then 3 x 100 tokens every step (the budget is 256)."""
    return ([600] if step == 0 else []) + [100, 100, 100]


def test_stretch_starts_a_long_prompt_overtaken_by_short_ones_sjf_starves_it() -> None:
    sim = check_stretch_bounds(Sim(256, "stretch", 2.0), starvation_workload, first_phase=1)
    long_start = sim.started[0][0]
    assert 1 < long_start < 20  # overtaken for a while (deadline 1200), then started
    overtook = [k for k, (step, _) in sim.started.items() if k > 3 and step < long_start]
    assert overtook  # later short prompts went first
    sjf = Sim(256, "sjf", 2.0)
    for step in range(300):
        for tokens in starvation_workload(step):
            sjf.arrive(tokens)
        sjf.run_step()
    assert 0 not in sjf.started  # shortest-first without aging never starts it
    fcfs = Sim(256, "fcfs", 2.0)
    for tokens in starvation_workload(0):
        fcfs.arrive(tokens)
    front, _ = fcfs.run_step()
    # Passed over by one short prompt, then chunked at once: the 600-token prompt needs 3 steps
    # of 256 and keeps the 88 tokens (chunk_floor) that still finish it in 3, so only one
    # 100-token prompt fits in front of it.
    assert [c.key for c in front] == [1, 0]


def test_stretch_zero_starts_in_arrival_order_under_overload() -> None:
    sim = check_stretch_bounds(Sim(256, "stretch", 0.0), starvation_workload, first_phase=5)
    starts = sorted(sim.started, key=lambda k: sim.started[k])
    assert starts == sorted(starts)


# -- worked examples -----------------------------------------------------------------------------


def test_blocks_needed() -> None:
    assert blocks_needed(0, 0, 16) == 0
    assert blocks_needed(0, 1, 16) == 1
    assert blocks_needed(0, 16, 16) == 1
    assert blocks_needed(0, 17, 16) == 2
    assert blocks_needed(15, 1, 16) == 0
    assert blocks_needed(15, 2, 16) == 1
    assert blocks_needed(16, 16, 16) == 1
    assert blocks_needed(5, 7, 1) == 7


def bimodal() -> list[Candidate]:
    """A 7000-token prompt, then 20 of 100 tokens, all on the same clock."""
    long = Candidate(key=0, tokens=7000, arrival=0.0)
    return [long] + [Candidate(key=i, tokens=100, arrival=i / 100) for i in range(1, 21)]


STEP = Budget(tokens=8192, slots=256, blocks=BIG, block_size=16)


def walk_queue(cs, policy="stretch", stretch=8.0, clock=0, budget=STEP, **kw) -> Plan:
    return plan(queue_order(cs, policy, stretch, clock), budget, policy=policy,
                stretch=stretch, clock=clock, **kw)


def test_bimodal_queue_fcfs_passes_over_and_chunks_the_first_left_out() -> None:
    """The long prompt and 11 short ones fill 8100 tokens; the 12th short one is the chunk
    (vLLM gives it the 92 tokens left): the step is full."""
    p = walk_queue(bimodal(), "fcfs")
    assert p == Plan(tuple(range(12)), 12, 8100, 7000 // 16 + 1 + 11 * 7, 21)


def test_bimodal_queue_stretch_serves_every_short_prompt_then_chunks_the_long_one() -> None:
    p = walk_queue(bimodal())
    assert (p.admit, p.chunk, p.tokens, p.scanned) == (tuple(range(1, 21)), 0, 2000, 21)
    assert walk_queue(bimodal(), "sjf").admit == tuple(range(1, 21))
    # hrrn: nothing has waited, equal ratios go in arrival order; every request is due, so
    # the first one that does not fit whole ends the walk as the chunk.
    p = walk_queue(bimodal(), "hrrn", clock=0)
    assert (p.admit, p.chunk, p.scanned) == (tuple(range(12)), 12, 13)


def test_a_due_prompt_is_not_overtaken() -> None:
    """Once the clock passes the long prompt's deadline (arrived at 0, 1000 tokens, stretch
    8: 8000) it is due: a later short prompt is behind it, and when it does not fit whole it is
    the chunk and nothing behind it is admitted."""
    long = Candidate(1, 1000, arrival=0.0, clock=0)
    shorts = [Candidate(k, 10, arrival=float(k), clock=8000) for k in range(2, 6)]
    busy = Budget(tokens=600, slots=8, blocks=BIG, block_size=16)
    p = walk_queue([long, *shorts], clock=8000, budget=busy)
    assert p == Plan((), 1, 0, 0, 1)
    # Before its deadline the short ones (arrived earlier on the clock) go first.
    early = [Candidate(k, 10, arrival=float(k), clock=5000) for k in range(2, 6)]
    p = walk_queue([long, *early], clock=7999, budget=busy)
    assert (p.admit, p.chunk) == ((2, 3, 4, 5), 1)
    # Not due and not fitting: passed over, the prompts behind it still go.
    p = walk_queue([long, *early], clock=7999, budget=busy, policy="fcfs")
    assert (p.admit, p.chunk) == ((2, 3, 4, 5), 1)


def test_preempted_go_first_and_are_due() -> None:
    q = [
        Candidate(1, 100, arrival=9.5, clock=900, preempted=True),  # preempted, arrived late
        Candidate(2, 10, arrival=3.0, clock=0),
        Candidate(3, 300, arrival=9.6, clock=900, preempted=True),
        Candidate(4, 10, arrival=9.9, clock=900),
    ]
    assert walk_queue(q, clock=1000).admit == (1, 3, 2, 4)
    room = Budget(tokens=250, slots=8, blocks=BIG, block_size=16)
    p = walk_queue(q, clock=1000, budget=room)
    assert p == Plan((1,), 3, 100, 7, 2)  # 3 does not fit whole: it is chunked, nothing jumps
    for policy in ("fcfs", "sjf", "hrrn"):
        assert walk_queue(q, policy, clock=1000, budget=room).admit == (1,)


def test_priority_class_comes_first() -> None:
    """vLLM's priority classes (lower first) come before every policy's order."""
    q = [Candidate(1, 10, arrival=0.0, priority=1),
         Candidate(2, 500, arrival=1.0, priority=0),
         Candidate(3, 20, arrival=2.0, priority=0, preempted=True),
         Candidate(4, 5, arrival=3.0, priority=-1)]
    for policy in POLICIES:
        assert walk_queue(q, policy).admit == (4, 3, 2, 1), policy


def test_kv_blocks_limit_admission() -> None:
    c = Candidate(1, 1000, cached=10, arrival=0.0)
    small = Candidate(2, 6, cached=10, arrival=1.0)  # fills block 1: no new block
    one_block = Budget(tokens=8192, slots=8, blocks=1, block_size=16)
    p = plan([c, small], one_block, policy="fcfs")
    assert p == Plan((2,), 1, 6, 0, 2)


def test_no_slot_or_no_tokens_admits_nothing() -> None:
    no_slots = Budget(tokens=8192, slots=0, blocks=BIG, block_size=16)
    no_tokens = Budget(tokens=0, slots=8, blocks=BIG, block_size=16)
    for budget in (no_slots, no_tokens):
        for policy in POLICIES:
            assert walk_queue(bimodal(), policy, budget=budget) == Plan((), None, 0, 0, 0)


def test_lookahead_limits_the_window() -> None:
    q = queue_order(bimodal(), "fcfs", 8.0, 0)
    p = plan(q, STEP, policy="fcfs", lookahead=3)
    assert (p.admit, p.scanned) == ((0, 1, 2), 3)
    # 150 tokens free now, 8192 in later steps: the long prompt finishes in one later step
    # whatever it gets now, so a short one goes in front of it.
    p = plan(q, Budget(tokens=150, slots=8, blocks=BIG, block_size=16, step_tokens=8192),
             policy="fcfs", lookahead=3)
    assert (p.admit, p.chunk, p.scanned) == ((1,), 0, 3)


# -- (g) options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "stretch", "words"), [
    ("ttft", 8.0, ["'ttft'", "stretch, fcfs, sjf, hrrn"]),
    ("split", 8.0, ["'split'", "stretch, fcfs, sjf, hrrn"]),
    ("stretch", -1, ["stretch", "-1", ">= 0"]),
    ("stretch", float("nan"), ["stretch", "nan", ">= 0"]),
    ("stretch", float("inf"), ["stretch", "inf", "finite"]),
    ("stretch", True, ["stretch", "True"]),
    ("stretch", "8", ["stretch", "'8'"]),
])
def test_check_policy_names_the_value_and_the_accepted_ones(policy, stretch, words) -> None:
    with pytest.raises(ValueError) as err:
        check_policy(policy, stretch)
    for word in words:
        assert word in str(err.value)


def test_check_policy_accepts_every_policy() -> None:
    for policy in POLICIES:
        for stretch in (0, 0.0, 8, 1e6):
            check_policy(policy, stretch)


@pytest.mark.parametrize(("options", "words"), [
    ({"policy": "ttft"}, ["policy", "'ttft'", "stretch, fcfs, sjf, hrrn"]),
    ({"stretch": -1}, ["stretch", "-1", ">= 0"]),
    ({"stretch": float("nan")}, ["stretch", "nan"]),
    ({"stretch": float("inf")}, ["stretch", "inf", "finite"]),
    ({"stretch": True}, ["stretch", "True"]),
    ({"lookahead": 0}, ["lookahead", "0", ">= 1"]),
    ({"lookahead": 2.5}, ["lookahead", "2.5", "integer"]),
    ({"lookahead": True}, ["lookahead", "True"]),
    ({"packed_attention": "yes"}, ["packed_attention", "'yes'", "auto, on, off"]),
    ({"split": "whole"}, ["'split'", "policy", "stretch", "lookahead"]),
    ({"max_wait_s": 5.0}, ["'max_wait_s'", "policy", "stretch", "lookahead"]),
])
def test_bad_options_name_the_value_and_the_accepted_ones(options, words) -> None:
    with pytest.raises(PrepackConfigError) as err:
        PrepackConfig.from_dict(options)
    for word in words:
        assert word in str(err.value)


def test_options_defaults_and_round_trip() -> None:
    config = PrepackConfig()
    defaults = inspect.signature(plan).parameters  # the planner's defaults are the config's
    assert (config.policy, config.stretch, config.lookahead) == (
        defaults["policy"].default, defaults["stretch"].default, defaults["lookahead"].default)
    assert config.policy == "stretch" and 0 < config.tail_quantile < 1
    given = PrepackConfig.from_dict({"policy": "hrrn", "stretch": 0, "lookahead": 1})
    assert PrepackConfig.from_dict(given.to_dict()) == given
    assert PrepackConfig.from_additional_config({"prepack": {"policy": "sjf"}}).policy == "sjf"
    assert PrepackConfig.from_additional_config(None) == config


def test_bad_values() -> None:
    with pytest.raises(ValueError, match="tokens must be >= 1, got 0"):
        Candidate(1, 0)
    with pytest.raises(ValueError, match="cached must be >= 0, got -1"):
        Candidate(1, 1, -1)
    with pytest.raises(ValueError, match="cap must be >= 0, got -1"):
        Candidate(1, 1, cap=-1)
    with pytest.raises(ValueError, match="block_size must be >= 1, got 0"):
        Budget(tokens=1, slots=1, blocks=1, block_size=0)
    with pytest.raises(ValueError, match="tokens must be >= 0, got -1"):
        Budget(tokens=-1, slots=1, blocks=1, block_size=1)


# -- purity --------------------------------------------------------------------------------------


def test_planner_imports_only_the_standard_library() -> None:
    source = Path(__file__).parents[2] / "vllm_prepack" / "planner.py"
    tree = ast.parse(source.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "planner.py must not import from its package"
            roots.add(node.module.split(".")[0])
    assert roots <= set(sys.stdlib_module_names), roots - set(sys.stdlib_module_names)


@PROPERTY
@given(scenarios())
def test_no_lower_class_admitted_past_a_passed_over_higher_one(s: Scenario) -> None:
    """vLLM's priority semantics: once a request is passed over, nothing of another class
    behind it is admitted in front of its chunk."""
    p = s.run()
    admitted = set(p.admit)
    passed = None
    for c in s.candidates[: p.scanned]:
        if c.key not in admitted and passed is None:
            passed = c
        elif c.key in admitted and passed is not None:
            assert c.priority == passed.priority, (passed, c)


@pytest.mark.parametrize(("policy", "stretch"), [
    *((p, s) for p in ("stretch", "fcfs", "sjf", "hrrn", "ttft", "split", "STRETCH", "")
      for s in (0, 8.0)),
    *(("stretch", s) for s in (-1, float("nan"), float("inf"), True, "8", 1e6)),
])
def test_config_and_the_planner_accept_the_same_policies(policy, stretch) -> None:
    from vllm_prepack import config, planner

    assert config.POLICIES is planner.POLICIES  # one definition
    try:
        check_policy(policy, stretch)
        planner_ok = True
    except ValueError:
        planner_ok = False
    try:
        PrepackConfig(policy=policy, stretch=stretch)
        config_ok = True
    except PrepackConfigError:
        config_ok = False
    assert planner_ok == config_ok, (policy, stretch)
