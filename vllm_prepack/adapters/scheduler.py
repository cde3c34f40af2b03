"""Scheduler surface: vLLM's own ``Scheduler``/``AsyncScheduler`` with the plan presented.

Each step the pure planner chooses which waiting requests to admit and in what order; the
waiting queue vLLM sees during ``super().schedule()`` holds exactly those, in plan order
(plus requests in blocked states, which vLLM itself must keep examining). vLLM keeps
enforcing budgets, KV allocation, preemption and chunking. Afterwards the queue is restored
to arrival order, with requests preempted during the step at its head.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import deque
from typing import Any

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.request_queue import SchedulingPolicy, create_request_queue
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request, RequestStatus

from vllm_prepack import planner
from vllm_prepack.adapters import attention
from vllm_prepack.config import PrepackConfig
from vllm_prepack.log import get_logger
from vllm_prepack.stats import PackingObserver, ScheduledPrefill

logger = get_logger(__name__)

_PLANNABLE = (RequestStatus.WAITING, RequestStatus.PREEMPTED)
POLICIES = tuple(p.value for p in SchedulingPolicy)


def prefills_of(scheduler: Scheduler, output: SchedulerOutput) -> list[ScheduledPrefill]:
    """Requests that received prompt tokens in ``output`` (after vLLM's bookkeeping)."""
    new_ids = {r.req_id for r in output.scheduled_new_reqs}
    resumed = set(output.scheduled_cached_reqs.resumed_req_ids)
    prefills = []
    for req_id, tokens in output.num_scheduled_tokens.items():
        request = scheduler.requests.get(req_id)
        if request is None:
            continue
        # _update_after_schedule has already advanced num_computed_tokens.
        before = request.num_computed_tokens - tokens
        if before >= request.num_prompt_tokens:
            continue
        prefills.append(
            ScheduledPrefill(
                req_id=req_id,
                tokens=min(tokens, request.num_prompt_tokens - before),
                computed_before=before,
                prompt_len=request.num_prompt_tokens,
                new=req_id in new_ids or req_id in resumed,
            )
        )
    return prefills


def data_parallel_rank(scheduler: Scheduler) -> int | None:
    """This engine core's data-parallel rank, or None without data parallelism.

    vLLM 0.32 runs the ranks of a dense model as independent engines: it resets
    ``data_parallel_size`` to 1 in each and keeps the rank in ``data_parallel_index`` and in
    the process name ``EngineCore_DP<rank>``; MoE ranks keep ``data_parallel_size``.
    """
    parallel = scheduler.vllm_config.parallel_config
    index = getattr(parallel, "data_parallel_index", parallel.data_parallel_rank)
    name = multiprocessing.current_process().name
    if parallel.data_parallel_size > 1 or index > 0 or name.startswith("EngineCore_DP"):
        return index
    return None


def make_observer(scheduler: Scheduler, config: PrepackConfig) -> PackingObserver:
    dp_rank = data_parallel_rank(scheduler)
    path = config.resolved_stats_path(dp_rank)
    jsonl = open(path, "a", buffering=1) if path else None  # noqa: SIM115 (lives with engine)
    return PackingObserver(
        budget=scheduler.max_num_scheduled_tokens,
        jsonl=jsonl,
        log_interval_s=config.stats_log_interval_s,
        log=logger,
        dp_rank=dp_rank,
    )


def observe_step(
    scheduler: Scheduler,
    observer: PackingObserver,
    output: SchedulerOutput,
    waiting_before: list[str],
    planned: list[str] | None = None,
    aged: int | None = None,
    planner_fault: bool = False,
    throttled: bool = False,
) -> None:
    waiting = list(scheduler.waiting) + list(scheduler.kv_holding_waiting)
    # Single-process executors run the worker here: its packed-path counters are visible.
    observer.packed = attention.read_counters()
    observer.record(
        prefills=prefills_of(scheduler, output),
        scheduled_tokens=output.total_num_scheduled_tokens,
        waiting_before=waiting_before,
        waiting_arrivals_after=(r.arrival_time for r in waiting),
        num_waiting=len(waiting),
        num_running=len(scheduler.running),
        now=time.time(),
        planned=planned,
        aged=aged,
        planner_fault=planner_fault,
        throttled=throttled,
    )


def throttled(args: tuple, kwargs: dict) -> bool:
    """The ``throttle_prefills`` argument of ``Scheduler.schedule``: vLLM's data-parallel
    engine core sets it on steps off its ``--prefill-schedule-interval`` cadence."""
    return bool(args[0] if args else kwargs.get("throttle_prefills", False))


def attach_observer(scheduler: Scheduler, config: PrepackConfig | None = None) -> PackingObserver:
    """Observe any scheduler instance (a stock one included) without changing its class."""
    observer = make_observer(scheduler, config or PrepackConfig())
    schedule = scheduler.schedule

    def observed_schedule(*args: Any, **kwargs: Any) -> SchedulerOutput:
        before = [r.request_id for r in scheduler.waiting]
        output = schedule(*args, **kwargs)
        observe_step(scheduler, observer, output, before, throttled=throttled(args, kwargs))
        return output

    scheduler.schedule = observed_schedule  # type: ignore[method-assign]
    scheduler.prepack_observer = observer  # type: ignore[attr-defined]
    return observer


class PrepackSchedulerMixin:
    """Plans each step's admissions, then delegates to vLLM's ``schedule()``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Validate before vLLM builds anything (KV cache manager, connectors).
        vllm_config = kwargs.get("vllm_config") or args[0]
        config = PrepackConfig.from_additional_config(vllm_config.additional_config)
        policy = vllm_config.scheduler_config.policy
        if policy not in POLICIES:
            raise ValueError(
                f"invalid --scheduling-policy {policy!r}; accepted: {', '.join(POLICIES)}"
            )
        super().__init__(*args, **kwargs)
        self.prepack_config = config
        self.prepack_observer = make_observer(self, self.prepack_config)
        self._prepack_candidates: dict[str, planner.Candidate] = {}
        self._prepack_hidden = 0
        logger.info(
            "Engine core built %s (%s)", type(self).__name__, self.prepack_config.to_dict()
        )

    # -- the plan --------------------------------------------------------------------------

    def _long_prefill_cap(self, num_eligible: int) -> int:
        """vLLM's per-request chunk cap this step (``long_prefill_token_threshold``, off
        when one request is eligible, floored at the fair share when adaptive); 0: none."""
        cap = self.scheduler_config.long_prefill_token_threshold if num_eligible > 1 else 0
        if cap > 0 and getattr(self, "adaptive_long_prefill_threshold", False):
            cap = max(cap, self.max_num_scheduled_tokens // num_eligible)
        return cap

    @staticmethod
    def _capped(tokens: int, cap: int) -> int:
        return cap if 0 < cap < tokens else tokens

    def _running_demand(self, cap: int) -> tuple[int, int]:
        """(tokens, new KV blocks) the running requests take this step, as vLLM schedules
        them first (each capped like vLLM caps it)."""
        tokens = blocks = 0
        for r in self.running:
            n = self._capped(max(
                0, r.num_tokens_with_spec + r.num_output_placeholders - r.num_computed_tokens
            ), cap)
            tokens += n
            blocks += planner.blocks_needed(r.num_computed_tokens, n, self.block_size) if n \
                else 0
        return tokens, blocks

    def _cached_tokens(self, request: Request) -> int:
        if request.num_computed_tokens or not self.kv_cache_manager.enable_caching:
            return request.num_computed_tokens
        if request.skip_reading_prefix_cache or not request.block_hashes:
            return 0
        _, hit, *_ = self.kv_cache_manager.coordinator.find_longest_cache_hit(
            request.block_hashes, request.num_tokens - 1
        )
        return hit

    def _budget(self, cap: int) -> planner.Budget:
        """The step's free resources once the running requests (and the waiting ones that
        hold KV blocks, which vLLM admits before any other) have theirs."""
        kv = self.kv_cache_manager
        free_blocks = kv.block_pool.get_num_free_blocks() - getattr(kv, "watermark_blocks", 0)
        run_tokens, run_blocks = self._running_demand(cap)
        holding = [r for r in self.kv_holding_waiting if self._promotable(r)]
        hold_tokens = sum(
            self._capped(max(1, r.num_tokens - r.num_computed_tokens), cap) for r in holding
        )
        return planner.Budget(
            tokens=max(0, self.max_num_scheduled_tokens - run_tokens - hold_tokens),
            slots=max(
                0,
                self.max_num_active_reqs - len(self.running)
                - self.num_waiting_for_streaming_input - len(holding),
            ),
            blocks=max(0, free_blocks - run_blocks),
            block_size=self.block_size,
            max_tokens=self.max_num_scheduled_tokens,
        )

    def _promotable(self, r: Request) -> bool:
        """Whether vLLM admits ``r`` when its admission loop reaches it this step: waiting
        or preempted requests, and blocked ones whose wait is over (grammar compiled,
        remote KV load finished), exactly as ``_handle_blocked_waiting_request`` promotes
        them. A grammar that failed to compile is not: vLLM reports it and skips it."""
        if r.status in _PLANNABLE:
            return True
        if r.status == RequestStatus.WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR:
            so = r.structured_output_request
            return bool(so) and so.grammar is not None and not isinstance(
                so.grammar, Exception)
        if r.status == RequestStatus.WAITING_FOR_REMOTE_KVS:
            return r.request_id in self.finished_recving_kv_req_ids
        return False

    def _window(self, waiting: Any) -> tuple[list[Request], list[Request]]:
        """(plannable, blocked). Plannable: the first ``lookahead`` requests vLLM would
        admit now (``_promotable``) in queue order, plus every aged or preempted one behind
        them (the aging rule holds for the whole queue, not only the window). Blocked: the
        rest, in vLLM's blocked states; vLLM examines them first each step (at no cost: it
        skips them, or reports a grammar error), so that none waits behind the plan."""
        cfg = self.prepack_config
        plannable, blocked = [], []
        for r in waiting:
            (plannable if self._promotable(r) else blocked).append(r)
        if len(plannable) > cfg.lookahead:
            oldest = time.time() - cfg.max_wait_s
            plannable = plannable[: cfg.lookahead] + [
                r for r in plannable[cfg.lookahead :]
                if r.arrival_time <= oldest or r.status == RequestStatus.PREEMPTED
            ]
        return plannable, blocked

    def _candidate(
        self, r: Request, previous: planner.Candidate | None, cap: int
    ) -> planner.Candidate:
        """The request as the planner sees it; reused across steps while nothing about it
        changed (with prefix caching on, the hit is looked up again every step). Its tokens
        are what vLLM schedules of it this step at most: the rest of the prompt, capped
        at vLLM's ``long_prefill_token_threshold`` chunk."""
        preempted = r.status == RequestStatus.PREEMPTED
        if (
            previous is not None
            and not self.kv_cache_manager.enable_caching
            and previous.cached == r.num_computed_tokens
            and previous.preempted == preempted
            and previous.tokens == self._capped(max(1, r.num_tokens - r.num_computed_tokens),
                                                cap)
        ):
            return previous
        cached = self._cached_tokens(r)
        remaining = max(1, r.num_tokens - cached)
        return planner.Candidate(
            key=id(r),
            tokens=self._capped(remaining, cap),
            chunked=self._capped(remaining, cap) < remaining,
            cached=cached,
            arrival=r.arrival_time,
            preempted=preempted,
            prefix=hash(r.block_hashes[0]) if r.block_hashes else None,
        )

    def _plan(self, plannable: list[Request]) -> tuple[list[Request], int]:
        """The requests to admit this step, in the order to present them, and how many of
        them were admitted as the aged head."""
        cfg = self.prepack_config
        running, waiting = self.get_request_counts()
        cap = self._long_prefill_cap(running + waiting)
        previous = self._prepack_candidates
        current = {r.request_id: self._candidate(r, previous.get(r.request_id), cap)
                   for r in plannable}
        self._prepack_candidates = current
        budget = self._budget(cap)
        now = time.time()
        by_key = {id(r): r for r in plannable}
        if self.policy == SchedulingPolicy.PRIORITY:
            classes: dict[int, list[planner.Candidate]] = {}
            for r in plannable:
                classes.setdefault(r.priority, []).append(current[r.request_id])
            groups = [classes[p] for p in sorted(classes)]
        else:
            groups = [list(current.values())]
        admitted: list[Request] = []
        aged = 0
        for candidates in groups:
            # vLLM's priority semantics: a class is admitted only once every request of
            # the classes before it is; prepack orders within the class.
            plan = planner.plan(
                candidates, budget, now,
                policy=cfg.policy, split=cfg.split, max_wait_s=cfg.max_wait_s,
                lookahead=max(1, len(candidates)),  # the window is already taken
            )
            if not admitted:
                aged = plan.aged
            admitted.extend(by_key[k] for k in plan.admit)
            if len(plan.admit) < len(candidates) or plan.partial is not None:
                break
            budget = planner.Budget(
                tokens=budget.tokens - plan.tokens,
                slots=budget.slots - len(plan.admit),
                blocks=budget.blocks - plan.blocks,
                block_size=budget.block_size,
                max_tokens=budget.max_tokens,
            )
        return admitted, aged

    # -- one step ------------------------------------------------------------------------------

    def get_request_counts(self) -> tuple[int, int]:
        """vLLM's counts, with the requests the plan hides during ``schedule()`` still
        counted as waiting: vLLM reads them there for its long-prefill fair share and, under
        data parallelism, to decide whether prefills are capacity-bound (throttling)."""
        running, waiting = super().get_request_counts()
        return running, waiting + self._prepack_hidden

    def schedule(self, *args: Any, **kwargs: Any) -> SchedulerOutput:
        throttle = throttled(args, kwargs)
        original = self.waiting
        waiting_before = [r.request_id for r in original]
        plannable, blocked = self._window(original)
        planned = None
        fault = False
        if plannable:
            try:
                planned = self._plan(plannable)
            except Exception:  # fall back to vLLM's own admission for this step
                fault = True
                logger.exception("prepack planner failed; vLLM's admission runs this step")
        if planned is None:
            output = super().schedule(*args, **kwargs)
            observe_step(self, self.prepack_observer, output, waiting_before,
                         planner_fault=fault, throttled=throttle)
            return output

        admitted, aged = planned
        # An FCFS queue under either policy: it keeps the plan's order (a priority heap
        # would re-sort it); the plan already orders the priority classes.
        presented = create_request_queue(SchedulingPolicy.FCFS)
        for r in (*blocked, *admitted):
            presented.add_request(r)
        shown = set(presented)
        self.waiting = presented
        self._prepack_hidden = len(original) - len(shown)
        try:
            output = super().schedule(*args, **kwargs)
        finally:
            self.waiting = original
            self._prepack_hidden = 0
            _restore(original, presented, shown)
        observe_step(self, self.prepack_observer, output, waiting_before,
                     planned=[r.request_id for r in admitted], aged=aged, throttled=throttle)
        return output


def _restore(original: Any, presented: Any, shown: set[Request]) -> None:
    """Put back what vLLM left waiting, in the original order: the requests it was not shown,
    and those it was shown but did not take. Requests preempted during the step (new to the
    queue) go first."""
    left = set(presented)
    before = list(original)
    preempted_now = [r for r in presented if r not in shown]
    if isinstance(original, deque):
        original.clear()
        original.extend(preempted_now)
        original.extend(r for r in before if r in left or r not in shown)
    else:  # a priority heap keeps its own order
        original.remove_requests([r for r in before if r in shown and r not in left])
        for r in preempted_now:
            original.add_request(r)


class PrepackSyncScheduler(PrepackSchedulerMixin, Scheduler):
    """``--scheduler prepack`` without async scheduling (CPU, or ``--no-async-scheduling``)."""


class PrepackAsyncScheduler(PrepackSchedulerMixin, AsyncScheduler):
    """``--scheduler prepack`` with async scheduling (vLLM's GPU default)."""


class PrepackScheduler:
    """What ``--scheduler prepack`` names in ``scheduler_cls``: builds the subclass that
    matches ``scheduler_config.async_scheduling``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Scheduler:  # type: ignore[misc]
        vllm_config = kwargs.get("vllm_config") or args[0]
        chosen = (
            PrepackAsyncScheduler
            if vllm_config.scheduler_config.async_scheduling
            else PrepackSyncScheduler
        )
        return chosen(*args, **kwargs)
