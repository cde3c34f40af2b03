"""Properties and examples of the pure admission planner (no vLLM, no torch, no engine)."""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vllm_prepack.planner import SWITCH_FILL, Budget, Candidate, Plan, blocks_needed, plan

PROPERTY = settings(derandomize=True, max_examples=300, deadline=None)
NOW = 100.0
BIG = 10**9


# -- scenarios ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    candidates: list[Candidate]
    budget: Budget
    policy: str
    split: str
    max_wait_s: float
    lookahead: int

    @property
    def kwargs(self) -> dict:
        return {"policy": self.policy, "split": self.split, "max_wait_s": self.max_wait_s,
                "lookahead": self.lookahead}

    @property
    def window(self) -> list[Candidate]:
        return self.candidates[: self.lookahead]

    def run(self) -> Plan:
        return plan(self.candidates, self.budget, NOW, **self.kwargs)

    def aged(self, c: Candidate) -> bool:
        return c.preempted or NOW - c.arrival >= self.max_wait_s


@st.composite
def scenarios(draw, aged: bool = True, prefixes: bool = True, monotonic: bool | None = None):
    """Queues of short and long prompts with prefix groups, aged and preempted requests."""
    n = draw(st.integers(0, 40))
    keys = draw(st.lists(st.integers(-1000, 1000), unique=True, min_size=n, max_size=n))
    max_wait_s = draw(st.sampled_from([1.0, 5.0]))
    young = st.sampled_from([0.0, 0.0, max_wait_s / 2]) | st.floats(0.0, max_wait_s * 0.99)
    old = st.sampled_from([max_wait_s, max_wait_s + 1]) | st.floats(max_wait_s, 3 * max_wait_s)
    aged_percent = draw(st.sampled_from([0, 5, 30])) if aged else 0
    short = st.integers(1, 64)
    candidates = [
        Candidate(
            key=key,
            tokens=draw(short | short | st.integers(200, 3000)),
            cached=draw(st.sampled_from([0, 0, 16]) | st.integers(0, 100)),
            arrival=NOW - draw(old if draw(st.integers(0, 99)) < aged_percent else young),
            preempted=draw(st.integers(0, 99)) < aged_percent // 5,
            prefix=draw(st.none() | st.integers(0, 3)) if prefixes else None,
        )
        for key in keys
    ]
    if monotonic is None:
        monotonic = draw(st.booleans())
    if monotonic:  # the engine's queue: preempted at the front, then arrival order
        candidates.sort(key=lambda c: (not c.preempted, c.arrival))
    tokens = draw(st.integers(0, 4000) | st.integers(500, 4000))
    budget = Budget(
        tokens=tokens,
        slots=draw(st.integers(0, 12) | st.just(64)),
        blocks=draw(st.integers(0, 300) | st.just(BIG)),
        block_size=draw(st.sampled_from([1, 3, 16, 32])),
        max_tokens=tokens + draw(st.sampled_from([0, 0, 500]) | st.integers(0, 3000)),
    )
    return Scenario(
        candidates=candidates,
        budget=budget,
        policy=draw(st.sampled_from(["ttft", "fcfs"])),
        split=draw(st.sampled_from(["whole", "fill"])),
        max_wait_s=max_wait_s,
        lookahead=draw(st.integers(1, n + 3) | st.just(1024)),
    )


# -- helpers -----------------------------------------------------------------------------------


def planned_tokens(p: Plan, by_key: dict[int, Candidate]) -> dict[int, int]:
    return {k: p.partial_tokens if k == p.partial else by_key[k].tokens for k in p.admit}


def fits(c: Candidate, tokens: int, slots: int, blocks: int, block_size: int) -> bool:
    return (c.tokens <= tokens and slots >= 1
            and blocks_needed(c.cached, c.tokens, block_size) <= blocks)


def whole_remainder(s: Scenario, p: Plan) -> tuple[int, int, int]:
    """(tokens, slots, blocks) left after the whole admissions, before the partial one."""
    by_key = {c.key: c for c in s.window}
    whole = [by_key[k] for k in p.admit if k != p.partial]
    bs = s.budget.block_size
    return (s.budget.tokens - sum(c.tokens for c in whole),
            s.budget.slots - len(whole),
            s.budget.blocks - sum(blocks_needed(c.cached, c.tokens, bs) for c in whole))


def shortest_first(young: list[Candidate]) -> list[Candidate]:
    return sorted(young, key=lambda c: (c.tokens, c.arrival, c.key))


def first_fit(order: list[Candidate], room: tuple[int, int, int], bs: int):
    """Reference greedy: (admitted, left out, room left) taking each of ``order`` that fits."""
    tokens, slots, blocks = room
    admitted, left_out = [], []
    for c in order:
        if fits(c, tokens, slots, blocks, bs):
            admitted.append(c)
            tokens, slots, blocks = (tokens - c.tokens, slots - 1,
                                     blocks - blocks_needed(c.cached, c.tokens, bs))
        else:
            left_out.append(c)
    return admitted, left_out, (tokens, slots, blocks)


def has_room(c: Candidate, room: tuple[int, int, int], bs: int) -> bool:
    tokens, slots, blocks = room
    return tokens >= 1 and slots >= 1 and blocks_needed(c.cached, 1, bs) <= blocks


def head_blocked(s: Scenario, p: Plan) -> bool:
    whole = set(p.admit) - {p.partial}
    return any(s.aged(c) and c.key not in whole for c in s.window)


# -- properties --------------------------------------------------------------------------------


@PROPERTY
@given(scenarios())
def test_never_over_budget(s: Scenario) -> None:
    p = s.run()
    by_key = {c.key: c for c in s.window}
    used = planned_tokens(p, by_key)
    bs = s.budget.block_size
    blocks = sum(blocks_needed(by_key[k].cached, n, bs) for k, n in used.items())
    assert p.tokens == sum(used.values()) <= s.budget.tokens
    assert p.blocks == blocks <= s.budget.blocks
    assert len(p.admit) <= s.budget.slots


@PROPERTY
@given(scenarios())
def test_keys_unique_and_from_the_window(s: Scenario) -> None:
    p = s.run()
    assert len(set(p.admit)) == len(p.admit)
    assert set(p.admit) <= {c.key for c in s.window}
    # Candidates past the lookahead window make no difference.
    assert plan(s.window, s.budget, NOW, **s.kwargs) == p


@PROPERTY
@given(scenarios())
def test_partial_is_last_and_single(s: Scenario) -> None:
    p = s.run()
    by_key = {c.key: c for c in s.window}
    if p.partial is None:
        assert p.partial_tokens == 0
    else:
        assert p.admit[-1] == p.partial
        assert 1 <= p.partial_tokens < by_key[p.partial].tokens


@PROPERTY
@given(scenarios())
def test_aging_order(s: Scenario) -> None:
    p = s.run()
    by_key = {c.key: c for c in s.window}
    admitted = [by_key[k] for k in p.admit]
    whole = set(p.admit) - {p.partial}
    # The first `aged` entries are exactly the aged/preempted ones admitted.
    assert all(s.aged(c) for c in admitted[: p.aged])
    assert not any(s.aged(c) for c in admitted[p.aged:])
    # Preempted ones come first, in queue order, none overtaken by another.
    preempted = [c.key for c in s.window if c.preempted]
    got = [c.key for c in admitted if c.preempted]
    assert list(p.admit[: len(got)]) == got == preempted[: len(got)]
    # Nothing admitted arrived later than an aged candidate left out (or only split) ...
    blockers = [c for c in s.window if s.aged(c) and c.key not in whole]
    for c in admitted:
        if not c.preempted:
            assert all(c.arrival <= b.arrival for b in blockers), (c, blockers)
    # ... and a preempted one left out lets no one else in.
    if any(b.preempted for b in blockers):
        assert all(c.preempted for c in admitted)
    # Aged ones (not preempted) go oldest first.
    arrivals = [c.arrival for c in admitted[: p.aged] if not c.preempted]
    assert arrivals == sorted(arrivals)


@PROPERTY
@given(scenarios())
def test_deterministic(s: Scenario) -> None:
    assert s.run() == s.run() == plan(tuple(s.candidates), s.budget, NOW, **s.kwargs)


@PROPERTY
@given(scenarios())
def test_whole_mode_splits_only_what_alone_exceeds_the_step(s: Scenario) -> None:
    p = s.run()
    if s.split == "whole" and p.partial is not None:
        c = next(c for c in s.window if c.key == p.partial)
        assert c.tokens > s.budget.max_tokens or c.chunked


def test_whole_mode_fills_the_gap_with_a_prompt_the_engine_chunks_anyway() -> None:
    """Three 800-token prompts, each capped at 400 per step by the engine (chunked): two
    run as 400-token chunks, the third is cut to the 224 tokens left."""
    budget = Budget(tokens=1024, slots=8, blocks=1000, block_size=16, max_tokens=1024)
    cands = [Candidate(key=i, tokens=400, cached=0, arrival=NOW + i, chunked=True)
             for i in range(3)]
    p = plan(cands, budget, NOW + 3)
    assert p.admit == (0, 1, 2) and p.partial == 2 and p.partial_tokens == 224
    unchunked = [Candidate(key=i, tokens=400, cached=0, arrival=NOW + i) for i in range(3)]
    assert plan(unchunked, budget, NOW + 3).admit == (0, 1)  # whole prompts only


@PROPERTY
@given(scenarios())
def test_no_head_of_line_blocking(s: Scenario) -> None:
    """Every young candidate left out (or only split) did not fit whole in what remained."""
    p = s.run()
    if head_blocked(s, p):
        return
    whole = set(p.admit) - {p.partial}
    tokens, slots, blocks = whole_remainder(s, p)
    for c in s.window:
        if c.key not in whole:
            assert not fits(c, tokens, slots, blocks, s.budget.block_size), c


@PROPERTY
@given(scenarios())
def test_prefix_group_members_are_admitted_consecutively(s: Scenario) -> None:
    p = s.run()
    by_key = {c.key: c for c in s.window}
    young = [by_key[k].prefix for k in p.admit[p.aged:] if k != p.partial]
    runs = [g for i, g in enumerate(young) if g is not None and (i == 0 or young[i - 1] != g)]
    assert len(runs) == len(set(runs)), young


@PROPERTY
@given(scenarios())
def test_a_young_split_uses_the_rest(s: Scenario) -> None:
    """A young prompt that is split gets all the tokens, or all the KV blocks, left."""
    p = s.run()
    if p.partial is None or head_blocked(s, p):
        return
    tokens, _, blocks = whole_remainder(s, p)
    bs = s.budget.block_size
    c = next(c for c in s.window if c.key == p.partial)
    n = p.partial_tokens
    assert blocks_needed(c.cached, n, bs) <= blocks
    assert n == tokens or blocks_needed(c.cached, n + 1, bs) > blocks


@PROPERTY
@given(scenarios(prefixes=False))
def test_young_ones_are_first_fit_in_policy_order(s: Scenario) -> None:
    """Without prefix groups the young part of a plan is the reference first fit: ``fcfs`` in
    queue order; ``ttft`` shortest first, or largest first when shortest first leaves more than
    ``1 - SWITCH_FILL`` of the free tokens, ``whole`` does not split to fill it, and largest
    first (oldest first among equal lengths) packs more. Then the split: ``fill``
    the first one left out, ``whole`` the shortest prompt larger than the step."""
    p = s.run()
    if head_blocked(s, p):
        return
    by_key = {c.key: c for c in s.window}
    bs = s.budget.block_size
    head = [by_key[k] for k in p.admit[: p.aged]]
    room = (s.budget.tokens - sum(c.tokens for c in head), s.budget.slots - len(head),
            s.budget.blocks - sum(blocks_needed(c.cached, c.tokens, bs) for c in head))
    young = [c for c in s.window if not s.aged(c)]
    order = shortest_first(young) if s.policy == "ttft" else young
    admitted, left_out, rest = first_fit(order, room, bs)
    if (s.policy == "ttft" and s.split == "whole"
            and room[0] - rest[0] < SWITCH_FILL * room[0]):
        largest = sorted(young, key=lambda c: (-c.tokens, c.arrival, c.key))
        fuller = first_fit(largest, room, bs)
        if room[0] - fuller[2][0] > room[0] - rest[0]:
            admitted, left_out, rest = fuller
    whole = [k for k in p.admit[p.aged:] if k != p.partial]
    assert whole == [c.key for c in admitted]
    if s.split == "fill":
        target = left_out[0] if left_out else None
    else:
        target = next((c for c in order if c.tokens > s.budget.max_tokens
                       and c.key not in whole), None)
    expected = target.key if target is not None and has_room(target, rest, bs) else None
    assert p.partial == expected


@PROPERTY
@given(scenarios(aged=False, prefixes=False))
def test_ttft_serves_the_shortest_unless_a_fuller_pack_exists(s: Scenario) -> None:
    """ttft passes a shorter prompt over for a longer one only on KV blocks, or when the
    shortest-first pack leaves more than ``1 - SWITCH_FILL`` of the step and it packs more."""
    s = Scenario(s.candidates, s.budget, "ttft", s.split, s.max_wait_s, s.lookahead)
    p = s.run()
    by_key = {c.key: c for c in s.window}
    bs = s.budget.block_size
    whole = [by_key[k] for k in p.admit if k != p.partial]
    room = (s.budget.tokens, s.budget.slots, s.budget.blocks)
    shortest, _, rest = first_fit(shortest_first(s.window), room, bs)
    packed, packed_shortest = sum(c.tokens for c in whole), room[0] - rest[0]
    assert packed >= packed_shortest
    if packed > packed_shortest:  # switched to the fuller pack: only when worth it
        assert s.split == "whole" and packed_shortest < SWITCH_FILL * room[0]
        return
    lengths = [c.tokens for c in whole]
    assert lengths == sorted(lengths)
    for a in whole:
        for b in s.window:
            if b not in whole and (b.tokens, b.arrival, b.key) < (a.tokens, a.arrival, a.key):
                assert blocks_needed(b.cached, b.tokens, bs) > blocks_needed(
                    a.cached, a.tokens, bs), (a, b)


# -- examples ----------------------------------------------------------------------------------


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
    long = Candidate(key=0, tokens=7000, cached=0, arrival=0.0)
    return [long] + [Candidate(key=i, tokens=100, cached=0, arrival=i / 100) for i in range(1, 21)]


STEP = Budget(tokens=8192, slots=256, blocks=BIG, block_size=16, max_tokens=8192)


@pytest.mark.parametrize(
    ("policy", "split", "admit", "partial_tokens", "tokens"),
    [
        ("fcfs", "fill", tuple(range(13)), 92, 8192),
        ("fcfs", "whole", tuple(range(12)), 0, 8100),
    ],
)
def test_bimodal_queue_fcfs(policy, split, admit, partial_tokens, tokens) -> None:
    p = plan(bimodal(), STEP, now=1.0, policy=policy, split=split)
    assert p.admit == admit
    assert p.partial == (admit[-1] if partial_tokens else None)
    assert (p.partial_tokens, p.tokens, p.aged) == (partial_tokens, tokens, 0)


def test_bimodal_queue_ttft_whole_takes_the_fuller_pack() -> None:
    """The 20 short prompts alone fill 2000 of 8192 tokens and ``whole`` will not split the
    long one to fill the rest: ttft packs largest first instead (the long prompt whole plus
    11 short ones, the oldest of them)."""
    p = plan(bimodal(), STEP, now=1.0, policy="ttft", split="whole")
    assert p.admit == tuple(range(12))
    assert (p.partial, p.partial_tokens, p.tokens, p.aged) == (None, 0, 8100, 0)


def test_bimodal_queue_ttft_fill_serves_every_short_prompt() -> None:
    """With ``fill`` the split fills the step anyway: all 20 short prompts go whole and the
    long one gets the rest as a chunk."""
    p = plan(bimodal(), STEP, now=1.0, policy="ttft", split="fill")
    assert p.admit == (*range(1, 21), 0)
    assert (p.partial, p.partial_tokens, p.tokens, p.aged) == (0, 6192, 8192, 0)


def test_ttft_packs_shortest_first_when_that_fills_the_step() -> None:
    q = [Candidate(0, 7000, 0, arrival=0.0)]
    q += [Candidate(k, 400, 0, arrival=k / 100) for k in range(1, 21)]
    p = plan(q, STEP, now=1.0, policy="ttft", split="whole")
    assert p.admit == tuple(range(1, 21))  # 20 x 400 = 8000 tokens: >= 95% of the step


def grouped_queue() -> list[Candidate]:
    spec = [(1, 50, None), (2, 300, 7), (3, 20, 7), (4, 100, None), (5, 10, None), (6, 200, 7)]
    return [Candidate(k, t, 0, arrival=k / 10, prefix=g) for k, t, g in spec]


def test_prefix_groups_are_admitted_together() -> None:
    q = grouped_queue()
    # ttft: the group sits at its smallest member (20 tokens), members by length.
    assert plan(q, STEP, now=1.0, policy="ttft").admit == (5, 3, 6, 2, 1, 4)
    # fcfs: the group follows its first member in queue order.
    assert plan(q, STEP, now=1.0, policy="fcfs").admit == (1, 2, 3, 6, 4, 5)
    tight = Budget(tokens=560, slots=8, blocks=BIG, block_size=16, max_tokens=8192)
    p = plan(q, tight, now=1.0, policy="ttft", split="whole")
    assert p.admit == (5, 3, 6, 2)  # 10 + 20 + 200 + 300: the whole group, then no room


def test_ttft_ties_go_by_arrival_then_key() -> None:
    q = [Candidate(9, 5, 0, arrival=0.3), Candidate(4, 5, 0, arrival=0.1),
         Candidate(7, 5, 0, arrival=0.1), Candidate(1, 6, 0, arrival=0.0)]
    assert plan(q, STEP, now=1.0).admit == (4, 7, 9, 1)


@pytest.mark.parametrize(("bad", "accepted"), [
    ({"policy": "sjf"}, ["'sjf'", "ttft", "fcfs"]),
    ({"split": "chunk"}, ["'chunk'", "whole", "fill"]),
    ({"max_wait_s": 0}, ["max_wait_s", "> 0"]),
    ({"max_wait_s": float("nan")}, ["max_wait_s", "> 0"]),
    ({"lookahead": 0}, ["lookahead", ">= 1"]),
])
def test_bad_options_name_the_value_and_the_accepted_ones(bad, accepted) -> None:
    with pytest.raises(ValueError) as err:
        plan(bimodal(), STEP, now=1.0, **bad)
    for word in accepted:
        assert word in str(err.value)


def test_bad_values() -> None:
    with pytest.raises(ValueError, match="tokens must be >= 1, got 0"):
        Candidate(1, 0, 0, arrival=0.0)
    with pytest.raises(ValueError, match="cached must be >= 0, got -1"):
        Candidate(1, 1, -1, arrival=0.0)
    with pytest.raises(ValueError, match="block_size must be >= 1, got 0"):
        Budget(tokens=1, slots=1, blocks=1, block_size=0, max_tokens=1)
    with pytest.raises(ValueError, match="max_tokens"):
        Budget(tokens=10, slots=1, blocks=1, block_size=1, max_tokens=5)
    with pytest.raises(ValueError, match="duplicate candidate key 3"):
        plan([Candidate(3, 1, 0, 0.0), Candidate(3, 2, 0, 0.0)], STEP, now=1.0)


def test_aged_head_is_not_overtaken() -> None:
    aged = Candidate(1, 6000, 0, arrival=0.0)
    young = [Candidate(k, 10, 0, arrival=9.0 + k / 10) for k in range(2, 6)]
    busy = Budget(tokens=4000, slots=8, blocks=BIG, block_size=16, max_tokens=8192)
    # whole: the aged prompt waits for a step with room, and so does everyone behind it.
    p = plan([aged, *young], busy, now=10.0, split="whole", max_wait_s=5.0)
    assert p == Plan((), None, 0, 0, 0, 0)
    # fill: the aged prompt takes what there is.
    p = plan([aged, *young], busy, now=10.0, split="fill", max_wait_s=5.0)
    assert p == Plan((1,), 1, 4000, 4000, 250, 1)
    # Not aged yet: the young ones overtake it.
    p = plan([aged, *young], busy, now=4.0, split="whole", max_wait_s=5.0)
    assert p.admit == (2, 3, 4, 5) and p.aged == 0


def test_aged_prompt_larger_than_the_step_is_split_even_in_whole_mode() -> None:
    huge = Candidate(1, 10000, 0, arrival=0.0)
    p = plan([huge, Candidate(2, 10, 0, arrival=9.0)], STEP, now=10.0, split="whole")
    assert (p.admit, p.partial, p.partial_tokens, p.aged) == ((1,), 1, 8192, 1)


def test_preempted_keep_the_head_and_the_oldest_aged_goes_first() -> None:
    q = [
        Candidate(1, 100, 0, arrival=9.5, preempted=True),  # preempted, arrived late
        Candidate(2, 100, 0, arrival=3.0),  # aged, queue order and arrival disagree
        Candidate(3, 100, 0, arrival=1.0),  # aged, the oldest
        Candidate(4, 10, 0, arrival=9.9),  # young
    ]
    assert plan(q, STEP, now=10.0).admit == (1, 3, 2, 4)
    room_for_two = Budget(tokens=250, slots=8, blocks=BIG, block_size=16, max_tokens=8192)
    p = plan(q, room_for_two, now=10.0, split="whole")
    assert (p.admit, p.aged) == ((1, 3), 2)  # 2 does not fit whole: nothing overtakes it
    p = plan(q, room_for_two, now=10.0, split="fill")
    assert (p.admit, p.partial, p.partial_tokens, p.aged) == ((1, 3, 2), 2, 50, 3)


def test_huge_young_prompt_is_split_into_the_gap_in_whole_mode() -> None:
    huge = Candidate(1, 20000, 0, arrival=0.0)
    short = Candidate(2, 100, 0, arrival=0.1)
    busy = Budget(tokens=3000, slots=8, blocks=BIG, block_size=16, max_tokens=8192)
    p = plan([huge], busy, now=1.0, split="whole")
    assert (p.admit, p.partial, p.partial_tokens) == ((1,), 1, 3000)
    p = plan([huge, short], busy, now=1.0, split="whole")
    assert (p.admit, p.partial, p.partial_tokens) == ((2, 1), 1, 2900)
    medium = Candidate(3, 5000, 0, arrival=0.0)  # > free tokens but fits an empty step
    assert plan([medium], busy, now=1.0, split="whole").admit == ()


def test_fcfs_skips_what_does_not_fit_and_packs_to_the_last_token() -> None:
    q = [Candidate(1, 100, 0, 0.0), Candidate(2, 50, 0, 0.1), Candidate(3, 1, 0, 0.2)]
    budget = Budget(tokens=101, slots=8, blocks=BIG, block_size=16, max_tokens=8192)
    p = plan(q, budget, now=1.0, policy="fcfs", split="whole")
    assert (p.admit, p.tokens) == ((1, 3), 101)


def test_split_is_limited_by_kv_blocks() -> None:
    c = Candidate(1, 1000, cached=10, arrival=0.0)
    one_block = Budget(tokens=8192, slots=8, blocks=1, block_size=16, max_tokens=8192)
    p = plan([c], one_block, now=1.0, split="fill")
    assert (p.partial, p.partial_tokens, p.blocks) == (1, 22, 1)  # fills blocks 1 and 2


def test_no_slot_or_no_tokens_admits_nothing() -> None:
    q = bimodal()
    no_slots = Budget(tokens=8192, slots=0, blocks=BIG, block_size=16, max_tokens=8192)
    no_tokens = Budget(tokens=0, slots=8, blocks=BIG, block_size=16, max_tokens=8192)
    for budget in (no_slots, no_tokens):
        for split in ("fill", "whole"):
            assert plan(q, budget, now=100.0, split=split).admit == ()


def test_lookahead_limits_the_window() -> None:
    q = bimodal()
    assert plan(q, STEP, now=1.0, lookahead=3).admit == (1, 2, 0)
    assert plan(q, STEP, now=1.0, lookahead=3, split="whole").admit == (1, 2, 0)


def test_planner_imports_only_the_standard_library() -> None:
    source = Path(__file__).parents[1] / "vllm_prepack" / "planner.py"
    tree = ast.parse(source.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "planner.py must not import from its package"
            roots.add(node.module.split(".")[0])
    assert roots <= set(sys.stdlib_module_names), roots - set(sys.stdlib_module_names)
