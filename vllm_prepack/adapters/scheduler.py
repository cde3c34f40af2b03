"""Scheduler surface: vLLM's own ``Scheduler``/``AsyncScheduler`` over a planned waiting queue.

The waiting queue is a :class:`PlanQueue`: vLLM's queue interface, kept in the planner's order
(``planner.order_key``, fixed when a request enters it). Each step the pure planner walks the
head of that order and picks the prompts to admit whole; the queue presents them first, then
the one to chunk, then the rest in order, and vLLM's own ``schedule()`` takes from it as from
its own queue: vLLM keeps enforcing budgets, KV allocation, preemption, priority and chunking,
and fills whatever budget the plan leaves.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
import math
import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.request_queue import RequestQueue, SchedulingPolicy
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request, RequestStatus

from vllm_prepack import compat, planner
from vllm_prepack import metrics as prepack_metrics
from vllm_prepack.adapters import attention, metrics
from vllm_prepack.config import PrepackConfig, check_cache_aware_window
from vllm_prepack.log import get_logger
from vllm_prepack.stats import JsonlFile, PackingObserver, ScheduledPrefill

logger = get_logger(__name__)

_PLANNABLE = (RequestStatus.WAITING, RequestStatus.PREEMPTED)
_ENTRY = "_prepack_entry"  # a request's place in the PlanQueue (set while it waits)
_CANDIDATE = "_prepack_candidate"  # the request as the planner last saw it


def prefills_of(scheduler: Scheduler, output: SchedulerOutput,
                mid_prefill: set[str]) -> list[ScheduledPrefill]:
    """Requests that received prompt tokens in ``output`` (after vLLM's bookkeeping): the new
    and resumed ones and those in ``mid_prefill`` (partly prefilled after an earlier step).
    Decoding requests are never looked at."""
    scheduled = output.num_scheduled_tokens
    new = {r.req_id for r in output.scheduled_new_reqs}
    new.update(compat.resumed_req_ids(output))
    prefills = []
    for req_id in (*new, *(r for r in mid_prefill if r not in new)):
        tokens = scheduled.get(req_id)
        request = scheduler.requests.get(req_id)
        if tokens is None or request is None:
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
                new=req_id in new,
                arrival=request.arrival_time,
            )
        )
    return prefills


def oldest_waiting_arrival(scheduler: Scheduler) -> float | None:
    """The earliest arrival among waiting requests, without walking the queues: a
    :class:`PlanQueue` keeps it, and vLLM's FCFS queues hold their oldest at the head."""
    oldest = []
    for queue in compat.waiting_queues(scheduler):
        if isinstance(queue, PlanQueue):
            arrival = queue.oldest_arrival()
        else:
            arrival = next(iter(queue)).arrival_time if queue else None
        if arrival is not None:
            oldest.append(arrival)
    return min(oldest, default=None)


def data_parallel_rank(scheduler: Scheduler) -> int | None:
    """This engine core's data-parallel rank, or None without data parallelism.

    vLLM 0.32 runs the ranks of a dense model as independent engines: it resets
    ``data_parallel_size`` to 1 in each and keeps the rank in ``data_parallel_index`` and in
    the process name ``EngineCore_DP<rank>``; MoE ranks keep ``data_parallel_size``.
    """
    parallel = scheduler.vllm_config.parallel_config
    index = compat.data_parallel_index(parallel)
    name = multiprocessing.current_process().name
    if parallel.data_parallel_size > 1 or index > 0 or name.startswith("EngineCore_DP"):
        return index
    return None


def make_observer(scheduler: Scheduler, config: PrepackConfig) -> PackingObserver:
    dp_rank = data_parallel_rank(scheduler)
    path = config.resolved_stats_path(dp_rank)
    jsonl = JsonlFile(path, log=logger) if path else None
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
    planned: list[Request] | None = None,
    planner_fault: bool = False,
    throttled: bool = False,
) -> list[ScheduledPrefill]:
    """Record one step; returns its prefills. Costs O(prefills), whatever waits."""
    prefills = prefills_of(scheduler, output, observer.mid_prefill)
    # Single-process executors run the worker here: its packed-path counters are visible.
    observer.packed = attention.read_counters()
    observer.record(
        prefills=prefills,
        scheduled_tokens=output.total_num_scheduled_tokens,
        oldest_waiting_arrival=oldest_waiting_arrival(scheduler),
        num_waiting=sum(map(len, compat.waiting_queues(scheduler))),
        num_running=len(scheduler.running),
        now=time.time(),
        planned=None if planned is None else [r.request_id for r in planned],
        planner_fault=planner_fault,
        throttled=throttled,
        preempted=len(output.preempted_req_ids or ()),
    )
    return prefills


def throttled(args: tuple, kwargs: dict) -> bool:
    """The ``throttle_prefills`` argument of ``Scheduler.schedule``: vLLM's data-parallel
    engine core sets it on steps off its ``--prefill-schedule-interval`` cadence."""
    return bool(args[0] if args else kwargs.get("throttle_prefills", False))


def attach_observer(scheduler: Scheduler, config: PrepackConfig | None = None) -> PackingObserver:
    """Observe any scheduler instance (a stock one included) without changing its class."""
    observer = make_observer(scheduler, config or PrepackConfig())
    schedule = scheduler.schedule

    def observed_schedule(*args: Any, **kwargs: Any) -> SchedulerOutput:
        output = schedule(*args, **kwargs)
        observe_step(scheduler, observer, output, throttled=throttled(args, kwargs))
        return output

    scheduler.schedule = observed_schedule  # type: ignore[method-assign]
    scheduler.prepack_observer = observer  # type: ignore[attr-defined]
    return observer


class PlanQueue(RequestQueue):
    """vLLM's waiting queue, kept in the planner's order (:func:`planner.order_key`).

    vLLM pops from the head of its waiting queue until the step's budget or slots run out,
    chunking the request it stops at. During ``schedule()`` this queue presents the step's
    plan first (the prompts admitted whole, then the one to chunk), then the rest in order.
    Each operation is a binary search plus a list insert or delete: a step never walks the
    whole queue."""

    def __init__(self, place: Callable[[Request], tuple]) -> None:
        self._place = place  # Request -> sort key (computed when it enters the queue)
        self._order: list[tuple] = []  # sorted (*key, seq)
        self._by_seq: dict[int, Request] = {}
        self._arrivals: list[tuple[float, int]] = []  # sorted (arrival, seq)
        self._seq = itertools.count()
        self._front: list[Request] = []
        self._front_at = 0

    def add_request(self, request: Request) -> None:
        entry = getattr(request, _ENTRY, None)
        if entry is None:
            entry = (*self._place(request), next(self._seq))
            setattr(request, _ENTRY, entry)
        bisect.insort(self._order, entry)
        self._by_seq[entry[-1]] = request
        bisect.insort(self._arrivals, (request.arrival_time, entry[-1]))

    def prepend_request(self, request: Request) -> None:
        """vLLM prepends preempted requests (they take a new place, at the head of their
        priority class) and the requests it passed over this step (they keep theirs)."""
        if request.status == RequestStatus.PREEMPTED:
            setattr(request, _ENTRY, None)
        self.add_request(request)

    def prepend_requests(self, requests: Iterable[Request]) -> None:
        for request in requests:
            self.prepend_request(request)

    def _index(self, request: Request) -> int | None:
        """Where ``request`` sits in the order, or None if it is not in this queue."""
        entry = getattr(request, _ENTRY, None)
        i = bisect.bisect_left(self._order, entry) if entry is not None else len(self._order)
        return None if i == len(self._order) or self._order[i] != entry else i

    def _remove_at(self, i: int, request: Request) -> None:
        seq = self._order.pop(i)[-1]
        del self._by_seq[seq]
        del self._arrivals[bisect.bisect_left(self._arrivals, (request.arrival_time, seq))]

    def remove_request(self, request: Request) -> None:
        i = self._index(request)
        if i is None:
            raise ValueError(f"request {request.request_id} is not in the waiting queue")
        self._remove_at(i, request)

    def remove_requests(self, requests: Iterable[Request]) -> None:
        """As vLLM's queues: a request not in this one is passed over (vLLM removes the same
        requests from each of its waiting queues in turn)."""
        for request in requests:
            i = self._index(request)
            if i is not None:
                self._remove_at(i, request)

    def peek_request(self) -> Request:
        while self._front_at < len(self._front):
            request = self._front[self._front_at]
            if self._holds(request):
                return request
            self._front_at += 1
        if not self._order:
            raise IndexError("peek from an empty queue")
        return self._by_seq[self._order[0][-1]]

    def pop_request(self) -> Request:
        request = self.peek_request()
        self.remove_request(request)
        return request

    def __bool__(self) -> bool:
        return bool(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[Request]:
        """The queue in the order vLLM takes it (the presented plan first)."""
        front = [r for r in self._front[self._front_at:] if self._holds(r)]
        shown = set(map(id, front))
        yield from front
        yield from (r for r in list(self.ordered()) if id(r) not in shown)

    def __getitem__(self, index: int | slice) -> Request | list[Request]:
        """The request at ``index`` in iteration order, as vLLM's FCFS queue (a deque) gives
        it: ``scheduler.waiting[i]``."""
        if isinstance(index, slice) or self._front_at < len(self._front):
            return list(self)[index]
        return self._by_seq[self._order[index][-1]]

    def ordered(self) -> Iterator[Request]:
        """The queue in planner order, lazily."""
        for entry in self._order:
            yield self._by_seq[entry[-1]]

    def present(self, front: list[Request]) -> None:
        """Put ``front`` (requests of this queue) ahead of the order, until the next call."""
        self._front, self._front_at = front, 0

    def oldest_arrival(self) -> float | None:
        """The earliest arrival time among the waiting requests."""
        return self._arrivals[0][0] if self._arrivals else None

    def nth_arrival(self, n: int) -> float:
        """The arrival time of the ``n``-th oldest waiting request (0: the oldest)."""
        return self._arrivals[n][0]

    def arrived_by(self, cutoff: float) -> Iterator[Request]:
        """The waiting requests that arrived at or before ``cutoff``, oldest first, lazily."""
        for arrival, seq in self._arrivals:
            if arrival > cutoff:
                return
            yield self._by_seq[seq]

    def _holds(self, request: Request) -> bool:
        entry = getattr(request, _ENTRY, None)
        return entry is not None and self._by_seq.get(entry[-1]) is request


class PrepackSchedulerMixin:
    """Keeps vLLM's waiting queue in the planner's order and presents each step's plan first,
    then delegates to vLLM's ``schedule()``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        vllm_config = kwargs.get("vllm_config") or args[0]
        config = PrepackConfig.from_additional_config(vllm_config.additional_config)
        check_cache_aware_window(compat.cache_aware_admission_window(vllm_config.scheduler_config))
        self._metrics_sender = prepack_metrics.Sender()
        """What this engine has sent to the API servers' ``/metrics``."""
        super().__init__(*args, **kwargs)
        self.prepack_config = config
        self.prepack_observer = make_observer(self, config)
        self.prepack_step_cpu_s = 0.0
        self.prepack_clock = 0
        """Prompt tokens this engine has computed: the clock the planner measures waits on."""
        self._by_key: dict[int, Request] = {}
        self._first_token_waits: collections.deque[float] = collections.deque(maxlen=512)
        self._tail_wait = math.inf
        """Waiting longer than this (seconds) makes a request due (``tail_quantile``)."""
        spec = self.vllm_config.speculative_config
        self._decode_tokens = 1 + (spec.num_speculative_tokens if spec is not None else 0)
        self.waiting = PlanQueue(self._place)
        logger.info("Engine core built %s (%s)", type(self).__name__, config.to_dict())

    # -- the order ---------------------------------------------------------------------------

    def _cached_tokens(self, request: Request) -> int:
        return compat.prefix_cache_hit(self, request)

    def _candidate(self, request: Request, cap: int = 0) -> planner.Candidate:
        """The request as the planner sees it. Its prefix-cache hit and the clock are read when
        it enters the queue; later only a change of its computed tokens or status refreshes it."""
        c = getattr(request, _CANDIDATE, None)
        preempted = request.status == RequestStatus.PREEMPTED
        if c is None or c.preempted != preempted or (
            request.num_computed_tokens and c.cached != request.num_computed_tokens
        ):
            cached = self._cached_tokens(request)
            c = planner.Candidate(
                key=id(request),
                tokens=max(1, request.num_tokens - cached),
                cached=cached,
                arrival=request.arrival_time,
                clock=self.prepack_clock if c is None else c.clock,
                preempted=preempted,
                priority=request.priority if self.policy == SchedulingPolicy.PRIORITY else 0,
            )
            setattr(request, _CANDIDATE, c)
        return c if c.cap == cap else dataclasses.replace(c, cap=cap)

    def _place(self, request: Request) -> tuple:
        cfg = self.prepack_config
        return planner.order_key(self._candidate(request), cfg.policy, cfg.stretch)

    # -- the plan ----------------------------------------------------------------------------

    def _chunk_cap(self) -> int:
        """vLLM's per-request chunk cap this step (``long_prefill_token_threshold``; none
        without chunked prefill, as vLLM 0.34 has it: under 0.32 and 0.33 a capped prompt
        could then never be scheduled)."""
        sc = self.scheduler_config
        cap = sc.long_prefill_token_threshold
        if cap <= 0 or not sc.enable_chunked_prefill:
            return 0
        running, waiting = self.get_request_counts()
        if running + waiting <= 1:
            return 0
        if getattr(sc, "long_prefill_token_threshold_adaptive", False):
            cap = max(cap, sc.max_num_batched_tokens // (running + waiting))
        return cap

    def _budget(self, cap: int) -> planner.Budget:
        """What vLLM will have left for waiting requests once it has scheduled the running
        ones: each decoding request takes one token (plus speculative ones) and a new block
        every ``block_size`` tokens; the partly prefilled ones (few) are counted exactly.
        Costs O(partly prefilled requests), not O(running)."""
        slots = (self.max_num_active_reqs - len(self.running)
                 - compat.streaming_input_waits(self))
        if slots <= 0:
            return planner.Budget(tokens=0, slots=0, blocks=0, block_size=self.block_size)
        block_size = self.block_size
        tokens = self.max_num_scheduled_tokens
        blocks = 0
        prefilling = 0
        for req_id in self.prepack_observer.mid_prefill:
            r = self.requests.get(req_id)
            if r is None or r.status != RequestStatus.RUNNING:
                continue
            prefilling += 1
            demand = min(r.num_tokens - r.num_computed_tokens, cap or tokens, max(tokens, 0))
            tokens -= demand
            blocks += planner.blocks_needed(r.num_computed_tokens, demand, block_size)
        decoding = len(self.running) - prefilling
        tokens -= decoding * self._decode_tokens
        blocks += -(-decoding * self._decode_tokens // block_size)
        free = compat.free_kv_blocks(self.kv_cache_manager)
        step = self.max_num_scheduled_tokens - decoding * self._decode_tokens
        return planner.Budget(tokens=max(0, tokens), slots=slots, blocks=max(0, free - blocks),
                              block_size=block_size, step_tokens=max(1, step),
                              whole_prompt=compat.admits_whole_prompts(self))

    def _walk(self, cap: int) -> Iterator[planner.Candidate]:
        """Candidates in queue order. A request in one of vLLM's blocked states goes through
        vLLM's own promotion check (what vLLM does when its scan reaches it) and is passed
        over while still blocked."""
        queue = self.waiting
        requests: Iterable[Request] = queue.ordered()
        cutoff = -math.inf
        if self.prepack_config.policy == "hrrn":
            if len(queue) <= planner.HRRN_SORT_LIMIT:
                order = planner.hrrn_order([self._candidate(r) for r in queue.ordered()],
                                           self.prepack_clock)
                by_key = {id(r): r for r in queue.ordered()}
                requests = [by_key[c.key] for c in order]
        elif self._tail_wait < math.inf:  # the tail bound: overdue requests first, by arrival
            cutoff = self._overdue_cutoff(queue)
            if self.policy == SchedulingPolicy.PRIORITY:
                requests = self._overdue_first(list(queue.arrived_by(cutoff)),
                                               queue.ordered(), cutoff)
            else:
                requests = itertools.chain(
                    queue.arrived_by(cutoff),
                    (r for r in queue.ordered() if r.arrival_time > cutoff))
        for r in requests:
            if r.status not in _PLANNABLE and not compat.promote_if_ready(self, r):
                continue
            c = self._candidate(r, cap)
            if r.arrival_time <= cutoff:
                c = dataclasses.replace(c, due=True)
            self._by_key[c.key] = r
            yield c

    def _overdue_first(self, first: list[Request], ordered: Iterable[Request],
                       cutoff: float) -> Iterator[Request]:
        """The queue order with the overdue requests (``first``, by arrival) moved to the head
        of their priority class: never ahead of a request of a higher class (vLLM's
        semantics)."""
        def klass(r: Request) -> int:
            return r.priority if self.policy == SchedulingPolicy.PRIORITY else 0

        first = sorted(first, key=klass)  # stable: by arrival within a class
        i = 0
        for r in ordered:
            if r.arrival_time <= cutoff:  # overdue: already in first
                continue
            while i < len(first) and klass(first[i]) <= klass(r):
                yield first[i]
                i += 1
            yield r
        yield from first[i:]

    def _oldest(self, cap: int) -> planner.Candidate | None:
        """The request vLLM's FCFS queue would take first, whose KV blocks the plan keeps
        (``kv_reserve``): the head of the order if preempted (vLLM puts preempted
        requests back at the head), else the earliest arrival, if it is of the head's priority
        class and not in a blocked state. Two lookups, no walk."""
        queue = self.waiting
        if self.prepack_config.kv_reserve == "off" or not queue:
            return None
        head = next(queue.ordered())
        first = head if head.status == RequestStatus.PREEMPTED else next(
            queue.arrived_by(math.inf))
        if first.status not in _PLANNABLE or (
                self.policy == SchedulingPolicy.PRIORITY and first.priority != head.priority):
            return None
        c = self._candidate(first, cap)
        self._by_key[c.key] = first
        return c

    def _plan(self) -> tuple[list[Request], int]:
        """The requests to present first this step, those admitted whole then the chunk, and
        how many are admitted whole."""
        cfg = self.prepack_config
        cap = self._chunk_cap()
        budget = self._budget(cap)
        if budget.slots < 1 or budget.tokens < 1:  # nothing can be admitted: no walk
            return [], 0
        self._by_key.clear()
        oldest = self._oldest(cap)
        plan = planner.plan(self._walk(cap), budget, policy=cfg.policy,
                            stretch=cfg.stretch, clock=self.prepack_clock,
                            lookahead=cfg.lookahead, oldest=oldest)
        front = [self._by_key[k] for k in plan.admit]
        if plan.chunk is not None:
            front.append(self._by_key[plan.chunk])
        self._by_key.clear()
        return front, len(plan.admit)

    # -- one step ------------------------------------------------------------------------------

    def schedule(self, *args: Any, **kwargs: Any) -> SchedulerOutput:
        # vLLM holds prefills on this step (its DP throttle, or 0.33's local cadence): the
        # step is observed as throttled, not as vLLM overriding the plan.
        throttle = throttled(args, kwargs) or compat.cadence_holds_prefill(self)
        queue = self.waiting
        front: list[Request] = []
        planned: list[Request] | None = None
        fault = False
        start = time.thread_time()
        if queue:
            try:
                front, whole = self._plan()
                planned = front[:whole]
            except Exception:  # vLLM takes the queue in order this step
                fault = True
                logger.exception("prepack planner failed; the queue is taken in order")
        queue.present(front)
        planning = time.thread_time() - start
        try:
            output = super().schedule(*args, **kwargs)
        finally:
            queue.present([])
        start = time.thread_time()
        prefills = observe_step(self, self.prepack_observer, output, planned=planned,
                                planner_fault=fault, throttled=throttle)
        self._advance(prefills)
        self.prepack_step_cpu_s = planning + time.thread_time() - start
        """This step's own CPU time: planning, candidates, statistics (not vLLM's pass)."""
        return output

    def shutdown(self) -> None:
        """vLLM's shutdown (the engine core calls it on its way out), then the statistics file
        is closed with every step's record in it."""
        super().shutdown()
        if self.prepack_observer.jsonl is not None:
            self.prepack_observer.jsonl.close()

    def make_stats(self, *args: Any, **kwargs: Any) -> Any:
        """vLLM's ``SchedulerStats`` with the packing statistics attached (the counters'
        increments since the previous call, the gauges' values), for the API server's
        ``/metrics`` (``adapters/metrics.py``)."""
        visible = getattr(self, "_packed_visible", None)
        if visible is None:  # fixed for the engine's life: read once
            visible = self._packed_visible = metrics.packed_counters_visible(self.vllm_config)
        return metrics.attach(
            super().make_stats(*args, **kwargs), self._metrics_sender,
            getattr(self, "prepack_observer", None), visible,
        )

    def _overdue_cutoff(self, queue: PlanQueue) -> float:
        """Requests that arrived by this time are overdue: they have waited longer than the
        ``tail_quantile`` of recent times to first token, and are among the oldest
        ``1 - tail_quantile`` of the queue (so that under sustained overload, when every wait
        outgrows the recent ones, the order does not collapse to arrival order)."""
        oldest_share = int((1 - self.prepack_config.tail_quantile) * len(queue))
        if oldest_share < 1:
            return -math.inf
        return min(time.time() - self._tail_wait, queue.nth_arrival(oldest_share - 1))

    def _advance(self, prefills: list[ScheduledPrefill]) -> None:
        """Move the prefill clock and the tail bound on by this step's prefills."""
        now = time.time()
        waits = self._first_token_waits
        for p in prefills:
            self.prepack_clock += p.tokens
            if p.computed_before + p.tokens >= p.prompt_len:
                waits.append(now - p.arrival)
        q = self.prepack_config.tail_quantile
        if q and len(waits) >= 64 and self.prepack_observer.steps % 16 == 0:
            self._tail_wait = sorted(waits)[int(q * (len(waits) - 1))]


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
