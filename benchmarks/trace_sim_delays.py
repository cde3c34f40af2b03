"""Where an arm's first-token delays come from, request by request, in the trace simulator.

A request's TTFT is three parts: its *lag* (from arrival to the first ``schedule()`` that sees
it: async scheduling's step in flight), its *hold* (from there to the step that first schedules
it: what the admission order and the KV reserve decide) and its *span* (from that step to the
end of the step that completes its prompt: its chunks, the length of their steps, a prefill
done again after a preemption). :class:`Events` records them during a run, and splits each
step of a hold by what the step left (:data:`REASONS`); :func:`breakdown` pairs an arm's run
with stock's on the same window and splits each request's difference into the three."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from vllm_prepack import compat
from vllm_prepack.planner import blocks_needed

REASONS = ("budget", "slots", "kv", "room")
"""What a step that left a visible request waiting had left, in this order of precedence: no
token of the budget (``budget``: the requests it scheduled took them all), no slot
(``slots``: ``max_num_seqs`` running), too few free KV blocks for the request's admission
(``kv``: its whole prompt's where vLLM reserves them, else those of a chunk in the budget
left) or room on all three (``room``: the scheduler chose not to start it, e.g. the KV reserve
or a chunk's slack)."""


@dataclass
class Events:
    """Per-request events of one simulated run (request ids ``r<index in arrival order>``)."""

    visible: dict[str, float] = field(default_factory=dict)  # first schedule() that saw it
    first: dict[str, float] = field(default_factory=dict)  # the step that first scheduled it
    prefill_steps: collections.Counter = field(default_factory=collections.Counter)
    """Steps that scheduled prompt tokens of the request (a prompt computed again after a
    preemption counts again)."""
    preempted: set[str] = field(default_factory=set)  # preempted before its first token
    held_for: dict[str, collections.Counter] = field(default_factory=dict)
    """Per request, its hold's seconds by :data:`REASONS` (each step's, until the next)."""
    _holding: dict[str, str] = field(default_factory=dict)
    _since: float = 0.0

    def step(self, scheduler, out, now: float, ttft: dict) -> None:
        """Record one ``schedule()``'s output ``out`` (vLLM's ``SchedulerOutput``) at ``now``;
        ``ttft``: the requests whose first token is out."""
        for req_id, reason in self._holding.items():
            self.held_for.setdefault(req_id, collections.Counter())[reason] += now - self._since
        for r in out.scheduled_new_reqs:
            self.first.setdefault(r.req_id, now)
        self._holding, self._since = self._hold_reasons(scheduler, out), now
        for req_id, n in out.num_scheduled_tokens.items():
            req = scheduler.requests.get(req_id)
            if req is not None and req.num_computed_tokens - n < req.num_prompt_tokens:
                self.prefill_steps[req_id] += 1  # schedule() has advanced the computed count
        self.preempted.update(r for r in out.preempted_req_ids or () if r not in ttft)

    def _hold_reasons(self, scheduler, out) -> dict[str, str]:
        """Each visible request that has not had a step yet, and what this step left it."""
        waiting = [r for r in scheduler.waiting
                   if r.request_id in self.visible and r.request_id not in self.first]
        if not waiting:
            return {}
        left = scheduler.max_num_scheduled_tokens - out.total_num_scheduled_tokens
        if left <= 0:
            return {r.request_id: "budget" for r in waiting}
        if len(scheduler.running) >= scheduler.scheduler_config.max_num_seqs:
            return {r.request_id: "slots" for r in waiting}
        free = compat.free_kv_blocks(scheduler.kv_cache_manager)
        whole = compat.admits_whole_prompts(scheduler)

        def reason(r) -> str:  # its prompt's blocks (no prefix-cache hit counted)
            new = r.num_prompt_tokens if whole else min(left, r.num_prompt_tokens)
            return "kv" if blocks_needed(0, new, scheduler.block_size) > free else "room"

        return {r.request_id: reason(r) for r in waiting}

    def held(self) -> dict[str, float]:
        """Per scheduled request: seconds from its first ``schedule()`` to its first step."""
        return {r: t - self.visible[r] for r, t in self.first.items()}


def parts(run, req_id: str, arrival: float) -> tuple[float, float, float]:
    """``(lag, hold, span)`` of one request's TTFT in ``run`` (they sum to it)."""
    seen = run.events.visible[req_id]
    lag, hold = seen - arrival, run.events.first[req_id] - seen
    return lag, hold, run.ttft[req_id] - lag - hold


def passed_by(events: Events) -> dict[str, int]:
    """Per request: later arrivals first scheduled in an earlier step than it."""
    order = sorted(events.first, key=lambda r: int(r[1:]))
    return {r: sum(events.first[s] < events.first[r] for s in order[i + 1:])
            for i, r in enumerate(order)}


def breakdown(base, other, arrivals: dict[str, float], top: int = 5) -> dict:
    """``other``'s run against ``base``'s (each a ``Run`` with ``events``) on one window: for
    the requests it delays and those it speeds up, the summed TTFT difference and its parts
    (seconds; ``preempted_here_only``: requests preempted before their first token in
    ``other``'s run only; ``hold_by_reason_s``: the hold's difference by :data:`REASONS`); the
    ``top`` most delayed and most sped-up requests, each with its parts (ms) and both runs'
    prefill steps, preemption and requests that passed it."""
    common = sorted(set(base.ttft) & set(other.ttft), key=lambda r: int(r[1:]))
    p = {name: {r: parts(run, r, arrivals[r]) for r in common}
         for name, run in (("base", base), ("other", other))}
    passed = {"base": passed_by(base.events), "other": passed_by(other.events)}
    delta = {r: other.ttft[r] - base.ttft[r] for r in common}

    def diff(r: str, k: int) -> float:
        return p["other"][r][k] - p["base"][r][k]

    def reasons(rs: list[str], scale: float) -> dict[str, float]:
        """The hold's difference by :data:`REASONS`, summed over ``rs``."""
        return {why: scale * sum(run_sign * run.events.held_for.get(r, {}).get(why, 0.0)
                                 for r in rs for run, run_sign in ((other, 1), (base, -1)))
                for why in REASONS}

    def total(rs: list[str]) -> dict:
        return {"requests": len(rs), "ttft_s": sum(delta[r] for r in rs),
                **{f"{name}_s": sum(diff(r, k) for r in rs)
                   for k, name in enumerate(("lag", "hold", "span"))},
                "hold_by_reason_s": reasons(rs, 1.0),
                "preempted_here_only": sum(r in other.events.preempted
                                           and r not in base.events.preempted for r in rs)}

    def row(r: str) -> dict:
        return {"request": int(r[1:]), "prompt_tokens": base.prompt_lens.get(r),
                "stock_ms": 1e3 * base.ttft[r], "delta_ms": 1e3 * delta[r],
                **{f"{name}_ms": 1e3 * diff(r, k)
                   for k, name in enumerate(("lag", "hold", "span"))},
                "hold_by_reason_ms": reasons([r], 1e3),
                "prefill_steps": [run.events.prefill_steps[r] for run in (base, other)],
                "preempted": [r in run.events.preempted for run in (base, other)],
                "passed_by": [passed[k].get(r, 0) for k in ("base", "other")]}

    ranked = sorted(common, key=lambda r: -delta[r])
    return {"delayed": total([r for r in common if delta[r] > 0]),
            "sped": total([r for r in common if delta[r] < 0]),
            "most_delayed": [row(r) for r in ranked[:top] if delta[r] > 0],
            "most_sped": [row(r) for r in ranked[::-1][:top] if delta[r] < 0]}
