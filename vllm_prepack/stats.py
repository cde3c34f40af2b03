"""Per-step packing statistics, computed from what the scheduler actually returned.

Pure: :class:`StepRecord` inputs are plain values extracted by the scheduler adapter from
vLLM's ``SchedulerOutput``, so the same observer serves the prepack arm and a stock engine.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any


@dataclass(frozen=True, slots=True)
class ScheduledPrefill:
    """One request that received prompt tokens this step."""

    req_id: str
    tokens: int          # prompt tokens scheduled this step
    computed_before: int  # tokens computed (or cached) before this step
    prompt_len: int
    new: bool            # admitted from the waiting queue this step
    arrival: float = 0.0  # arrival time of the request


@dataclass(frozen=True, slots=True)
class StepStats:
    step: int
    time: float
    admitted: int
    prefill_tokens: int
    scheduled_tokens: int
    budget: int
    fill: float
    partial_prefills: int
    overtakes: int
    oldest_wait_s: float
    waiting: int
    running: int
    planned: int | None = None
    plan_adhered: bool | None = None
    planner_fault: bool = False
    throttled: bool = False
    """vLLM held prefills this step (``--prefill-schedule-interval``): the data-parallel
    engine core's throttle, or vLLM 0.33's local cadence; vLLM admits then only when
    capacity-bound."""
    preempted: int = 0
    """Requests vLLM preempted this step (KV blocks ran out); in such a step it admits
    nothing from the waiting queue."""
    dp_rank: int | None = None
    """The engine core's data-parallel rank (None without data parallelism)."""

    def to_line(self) -> str:
        """The record as a JSONL line (``dp_rank`` only with data parallelism)."""
        record = {name: getattr(self, name) for name in _STEP_FIELDS}
        if self.dp_rank is None:
            del record["dp_rank"]
        return json.dumps(record) + "\n"


_STEP_FIELDS = tuple(f.name for f in dataclasses.fields(StepStats))


class JsonlFile:
    """A JSONL file written by a background thread. :meth:`write` only appends the record (an
    object with ``to_line()``) to a queue, so a step neither serializes nor waits on the file
    system. The thread looks at the queue every ``poll_s``; it turns what has gathered into
    lines, writes them and flushes the file once the queue has stopped growing (the engine
    paused), at least every ``interval_s`` while it keeps growing, and on :meth:`flush`.
    ``target``: a path (opened for appending, closed by :meth:`close`) or an open text file."""

    def __init__(self, target: str | IO[str], log: Any = None, interval_s: float = 0.5,
                 poll_s: float = 0.05) -> None:
        self.path = target if isinstance(target, str) else getattr(target, "name", repr(target))
        self.log, self.interval_s, self.poll_s = log, interval_s, poll_s
        self._owned = isinstance(target, str)
        self._file: IO[str] = open(target, "a") if self._owned else target  # noqa: SIM115
        self.error: OSError | None = None
        """The write that failed, if one did (logged; the engine keeps running without the
        file)."""
        self._records: collections.deque[Any] = collections.deque()
        """Records, and the :class:`threading.Event` of each flush (set once the records
        before it are in the file); None closes the file."""
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="prepack-stats", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def write(self, record: Any) -> None:
        self._records.append(record)

    def flush(self) -> None:
        """Return once every record written so far is in the file."""
        done = threading.Event()
        self._records.append(done)
        self._wake.set()
        while not done.wait(0.1) and self._thread.is_alive():
            pass

    def close(self) -> None:
        if self._thread.is_alive():
            self._records.append(None)
            self._wake.set()
            self._thread.join(timeout=10)

    def _drain(self) -> None:
        emptied, seen = time.monotonic(), 0
        while True:
            woken = self._wake.wait(self.poll_s)
            self._wake.clear()
            pending, now = len(self._records), time.monotonic()
            if not woken and pending != seen and now - emptied < self.interval_s:
                seen = pending  # still growing: the engine is stepping, gather more
                continue
            emptied, seen = now, 0
            if self._write_pending():
                return

    def _write_pending(self) -> bool:
        """Write the queued records; True once the file is closed."""
        lines: list[str] = []
        while self._records:
            item = self._records.popleft()
            if item is not None and not isinstance(item, threading.Event):
                if self.error is None:  # after a failed write, records are dropped
                    lines.append(item.to_line())
                continue
            self._put(lines)
            lines = []
            if item is None:
                if self._owned:
                    self._file.close()
                return True
            item.set()
        self._put(lines)
        return False

    def _put(self, lines: list[str]) -> None:
        if not lines or self.error is not None:
            return
        try:
            self._file.write("".join(lines))
            self._file.flush()
        except OSError as e:
            self.error = e
            if self.log is not None:
                self.log.warning("vllm-prepack: statistics file %s: %s; the records after it "
                                 "are dropped", self.path, e)


@dataclass
class PackingObserver:
    """Accumulates :class:`StepStats`, writes JSONL and periodic log lines."""

    budget: int
    jsonl: JsonlFile | None = None
    """Where each step's record goes (written by the file's own thread, never waited on)."""
    log_interval_s: float = 0.0
    log: object | None = None
    dp_rank: int | None = None
    """Data-parallel rank of the engine core (None without data parallelism)."""
    steps: int = 0
    prefill_steps: int = 0
    admitted: int = 0
    prefill_tokens: int = 0
    scheduled_tokens: int = 0
    prefill_step_tokens: int = 0
    """Tokens scheduled in the steps that scheduled prompt tokens (the numerator of fill)."""
    fill_sum: float = 0.0
    overtakes: int = 0
    planned_steps: int = 0
    adhered_steps: int = 0
    planner_faults: int = 0
    throttled_steps: int = 0
    throttled_admitted: int = 0
    preemptions: int = 0
    """Requests vLLM preempted, summed over steps."""
    max_oldest_wait_s: float = 0.0
    split_prompts: int = 0
    first_tokens: int = 0
    first_token_step_sum: int = 0
    oldest_wait_s: float = 0.0
    """Age of the oldest waiting request after the latest step."""
    packed: dict[str, int] = field(default_factory=dict)
    """Packed-attention counters, when the attention path runs in this process."""
    mid_prefill: set[str] = field(default_factory=set)
    """Requests whose prompt is partly computed (the ones that may get prompt tokens next)."""
    _last_log: float = field(default_factory=time.monotonic)

    def record(
        self,
        *,
        prefills: Sequence[ScheduledPrefill],
        scheduled_tokens: int,
        oldest_waiting_arrival: float | None,
        num_waiting: int,
        num_running: int,
        now: float,
        planned: Sequence[str] | None = None,
        planner_fault: bool = False,
        throttled: bool = False,
        preempted: int = 0,
    ) -> StepStats:
        """One step. ``oldest_waiting_arrival``: the earliest arrival still waiting after it.
        An admitted request *overtook* if it arrived after that one."""
        self.steps += 1
        admitted = set()
        partial = overtakes = prefill_tokens = 0
        for p in prefills:
            prefill_tokens += p.tokens
            if p.new:
                admitted.add(p.req_id)
                if oldest_waiting_arrival is not None and p.arrival > oldest_waiting_arrival:
                    overtakes += 1
            if p.computed_before + p.tokens < p.prompt_len:
                partial += 1
                if p.req_id not in self.mid_prefill:
                    self.mid_prefill.add(p.req_id)
                    self.split_prompts += 1
            else:
                self.mid_prefill.discard(p.req_id)
                self.first_tokens += 1
                self.first_token_step_sum += self.steps
        oldest = 0.0 if oldest_waiting_arrival is None else max(0.0, now - oldest_waiting_arrival)
        stats = StepStats(
            step=self.steps,
            time=now,
            admitted=len(admitted),
            prefill_tokens=prefill_tokens,
            scheduled_tokens=scheduled_tokens,
            budget=self.budget,
            fill=scheduled_tokens / self.budget if self.budget else 0.0,
            partial_prefills=partial,
            overtakes=overtakes,
            oldest_wait_s=oldest,
            waiting=num_waiting,
            running=num_running,
            planned=None if planned is None else len(planned),
            plan_adhered=None if planned is None else admitted.issuperset(planned),
            planner_fault=planner_fault,
            throttled=throttled,
            preempted=preempted,
            dp_rank=self.dp_rank,
        )
        self._accumulate(stats)
        return stats

    def _accumulate(self, s: StepStats) -> None:
        self.admitted += s.admitted
        self.prefill_tokens += s.prefill_tokens
        self.scheduled_tokens += s.scheduled_tokens
        if s.prefill_tokens:
            self.prefill_steps += 1
            self.prefill_step_tokens += s.scheduled_tokens
            self.fill_sum += s.fill
        self.overtakes += s.overtakes
        self.max_oldest_wait_s = max(self.max_oldest_wait_s, s.oldest_wait_s)
        self.oldest_wait_s = s.oldest_wait_s
        self.planner_faults += int(s.planner_fault)
        self.preemptions += s.preempted
        if s.throttled:
            self.throttled_steps += 1
            self.throttled_admitted += s.admitted
        if judges_plan(s.planned, s.admitted, s.throttled):
            self.planned_steps += 1
            self.adhered_steps += int(bool(s.plan_adhered))
        if self.jsonl is not None:
            self.jsonl.write(s)
        if self.log is not None and self.log_interval_s > 0:
            now = time.monotonic()
            if now - self._last_log >= self.log_interval_s:
                self._last_log = now
                self.log.info("%s", self.summary_line())

    def summary(self) -> dict:
        return {
            **({} if self.dp_rank is None else {"dp_rank": self.dp_rank}),
            "steps": self.steps,
            "prefill_steps": self.prefill_steps,
            "admitted": self.admitted,
            "prefill_tokens": self.prefill_tokens,
            "scheduled_tokens": self.scheduled_tokens,
            "mean_prefill_fill": self.fill_sum / self.prefill_steps if self.prefill_steps else 0.0,
            "split_prompts": self.split_prompts,
            "overtakes": self.overtakes,
            "planned_steps": self.planned_steps,
            "plan_adherence": (
                self.adhered_steps / self.planned_steps if self.planned_steps else None
            ),
            "planner_faults": self.planner_faults,
            "throttled_steps": self.throttled_steps,
            "throttled_admitted": self.throttled_admitted,
            "preemptions": self.preemptions,
            "max_oldest_wait_s": self.max_oldest_wait_s,
            "packed_attention": dict(self.packed),
            "mean_first_token_step": (
                self.first_token_step_sum / self.first_tokens if self.first_tokens else None
            ),
        }

    def summary_line(self) -> str:
        s = self.summary()
        adherence = s["plan_adherence"]
        rank = "" if self.dp_rank is None else f"dp_rank={self.dp_rank} "
        return (
            f"Packing stats: {rank}steps={s['steps']} admitted={s['admitted']} "
            f"prefill_tokens={s['prefill_tokens']} "
            f"prefill_fill={100 * s['mean_prefill_fill']:.1f}% "
            f"split_prompts={s['split_prompts']} overtakes={s['overtakes']} "
            f"plan_adherence={'n/a' if adherence is None else f'{100 * adherence:.1f}%'} "
            f"planner_faults={s['planner_faults']} "
            + (f"throttled_steps={s['throttled_steps']} " if s["throttled_steps"] else "")
            + f"max_oldest_wait={s['max_oldest_wait_s']:.2f}s"
            + (f" packed_tokens={self.packed['tokens']} packed_steps={self.packed['steps']}"
               if self.packed.get("steps") else "")
        )


REPLAYED = ("steps", "prefill_steps", "admitted", "prefill_tokens", "mean_prefill_fill",
            "overtakes", "plan_adherence", "planner_faults", "throttled_steps",
            "throttled_admitted", "preemptions", "max_oldest_wait_s")
"""The keys of :meth:`PackingObserver.summary` that a JSONL file's records determine."""


def summarize_records(records: Iterable[Mapping]) -> dict:
    """The summary of a JSONL statistics file (one :class:`StepStats` record a line), made by
    the same accumulation as the engine core's observer (:data:`REPLAYED` keys), plus the
    number of partial prefills; ``mean_prefill_fill`` is None when no step carried prompt
    tokens. Fields a record lacks take 0 (or their :class:`StepStats` default)."""
    names = {f.name for f in dataclasses.fields(StepStats)}
    zeros = dict.fromkeys(("step", "time", "scheduled_tokens", "budget", "waiting", "running"), 0)
    observer = PackingObserver(budget=0)
    partial = 0
    for record in records:
        step = StepStats(**{**zeros, **{k: v for k, v in record.items() if k in names}})
        observer.steps += 1
        observer._accumulate(step)
        partial += step.partial_prefills
    summary = observer.summary()
    out = {key: summary[key] for key in REPLAYED}
    if not observer.prefill_steps:
        out["mean_prefill_fill"] = None
    out["partial_prefills"] = partial
    return out


def judges_plan(planned: int | None, admitted: int, throttled: bool) -> bool:
    """Whether a step counts for plan adherence: a plan was made and something was planned
    or admitted. A throttled step that admitted nothing is vLLM deferring prefills (data
    parallelism), not the plan being overridden, so it does not count."""
    return planned is not None and bool(planned or admitted) and not (throttled and not admitted)


def reset(observer: PackingObserver) -> None:
    """Zero an observer's totals in place (between benchmark repetitions)."""
    fresh = PackingObserver(budget=observer.budget, jsonl=observer.jsonl,
                            log_interval_s=observer.log_interval_s, log=observer.log,
                            dp_rank=observer.dp_rank)
    for f in dataclasses.fields(PackingObserver):
        setattr(observer, f.name, getattr(fresh, f.name))
