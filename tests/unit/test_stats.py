"""The per-step packing statistics (pure: plain values in, no vLLM)."""

from __future__ import annotations

import io
import json
import threading

from vllm_prepack.stats import (
    REPLAYED,
    JsonlFile,
    PackingObserver,
    ScheduledPrefill,
    judges_plan,
    reset,
    summarize_records,
)


def prefill(req_id, tokens, *, before=0, prompt=None, new=True, arrival=0.0):
    return ScheduledPrefill(req_id=req_id, tokens=tokens, computed_before=before,
                            prompt_len=prompt or before + tokens, new=new, arrival=arrival)


def record(observer, prefills, *, oldest=None, planned=None, throttled=False, scheduled=None,
           preempted=0):
    return observer.record(
        prefills=prefills,
        scheduled_tokens=sum(p.tokens for p in prefills) if scheduled is None else scheduled,
        oldest_waiting_arrival=oldest, num_waiting=3, num_running=2, now=100.0,
        planned=planned, throttled=throttled, preempted=preempted)


def test_overtakes_are_admissions_that_arrived_after_the_oldest_still_waiting():
    observer = PackingObserver(budget=100)
    s = record(observer, [prefill("a", 10, arrival=1.0), prefill("b", 10, arrival=5.0),
                          prefill("c", 10, arrival=3.0),
                          prefill("d", 10, before=10, prompt=40, new=False, arrival=9.0)],
               oldest=3.0)
    # b arrived after the oldest request still waiting (3.0); c arrived with it, a before it;
    # d was already running (a chunk continued): not an admission.
    assert (s.admitted, s.overtakes, s.oldest_wait_s) == (3, 1, 97.0)
    s = record(observer, [prefill("e", 5, arrival=50.0)], oldest=None)  # nothing waits
    assert (s.overtakes, s.oldest_wait_s) == (0, 0.0)
    assert observer.overtakes == 1 and observer.admitted == 4
    assert observer.max_oldest_wait_s == 97.0


def test_split_prompts_partial_prefills_and_first_tokens():
    observer = PackingObserver(budget=100)
    s = record(observer, [prefill("long", 60, prompt=150), prefill("short", 40)])
    assert (s.partial_prefills, s.prefill_tokens, s.fill) == (1, 100, 1.0)
    assert observer.mid_prefill == {"long"}
    s = record(observer, [prefill("long", 60, before=60, prompt=150, new=False)])
    assert s.partial_prefills == 1 and observer.split_prompts == 1  # counted once
    record(observer, [prefill("long", 30, before=120, prompt=150, new=False)], scheduled=50)
    assert observer.mid_prefill == set()
    summary = observer.summary()
    assert summary["split_prompts"] == 1 and summary["admitted"] == 2
    assert summary["mean_first_token_step"] == (1 + 3) / 2  # short at step 1, long at 3
    assert summary["mean_prefill_fill"] == (1.0 + 0.6 + 0.5) / 3


def test_plan_adherence_and_the_steps_that_judge_it():
    observer = PackingObserver(budget=100)
    record(observer, [prefill("a", 10), prefill("b", 10)], planned=["a", "b"])
    record(observer, [prefill("c", 10)], planned=["c", "x"])  # x planned, not admitted
    record(observer, [], planned=[], throttled=True)  # deferred: does not count
    record(observer, [], planned=None)  # no plan (stock or a fault)
    summary = observer.summary()
    assert (summary["planned_steps"], summary["plan_adherence"]) == (2, 0.5)
    assert summary["throttled_steps"] == 1 and summary["throttled_admitted"] == 0
    assert judges_plan(2, 0, False) and judges_plan(0, 1, True)
    assert not judges_plan(None, 3, False) and not judges_plan(0, 0, False)
    assert not judges_plan(2, 0, True)


def test_jsonl_lines_and_reset():
    text = io.StringIO()
    out = JsonlFile(text)
    observer = PackingObserver(budget=100, jsonl=out, dp_rank=1)
    record(observer, [prefill("a", 10, arrival=2.0)], oldest=1.0, planned=["a"])
    out.flush()
    line = json.loads(text.getvalue().splitlines()[0])
    assert line["dp_rank"] == 1 and line["overtakes"] == 1 and line["plan_adhered"] is True
    assert "waiting_before" not in line
    reset(observer)
    assert observer.steps == 0 and observer.overtakes == 0 and observer.jsonl is out
    assert observer.summary()["dp_rank"] == 1


def test_a_jsonl_file_summarizes_as_the_observer_that_wrote_it():
    text = io.StringIO()
    out = JsonlFile(text)
    observer = PackingObserver(budget=64, jsonl=out)
    record(observer, [prefill("a", 40, arrival=1.0), prefill("b", 20, prompt=50, arrival=2.0)],
           oldest=1.5, planned=["a", "b"])
    record(observer, [prefill("b", 30, before=20, new=False, arrival=2.0)], oldest=None)
    record(observer, [], oldest=3.0, planned=["c"], throttled=True)
    record(observer, [], oldest=3.0, planned=["c"], preempted=2)  # KV ran out: nothing admitted
    record(observer, [prefill("c", 8, arrival=3.0)], oldest=None, planned=["c", "d"])
    out.flush()
    lines = [json.loads(line) for line in text.getvalue().splitlines()]
    assert "dp_rank" not in lines[0]  # only with data parallelism
    replayed = summarize_records(lines)
    summary = observer.summary()
    assert {k: replayed[k] for k in REPLAYED} == {k: summary[k] for k in REPLAYED}
    assert replayed["partial_prefills"] == 1 and replayed["steps"] == 5
    assert [line["preempted"] for line in lines] == [0, 0, 0, 2, 0]
    assert replayed["preemptions"] == summary["preemptions"] == 2
    assert summarize_records([])["mean_prefill_fill"] is None


def test_a_jsonl_file_is_written_off_the_step():
    """An engine's statistics file: a step's record is queued, never serialized or waited on
    in the step; a stalled file system stalls only the writer thread; every line lands, in
    order; a failed write drops the records after it instead of piling them up or failing the
    step."""
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "stats.jsonl"
    warnings: list[str] = []
    out = JsonlFile(str(path), log=type("Log", (), {
        "warning": staticmethod(lambda fmt, *args: warnings.append(fmt % args))}))
    observer = PackingObserver(budget=64, jsonl=out)
    stalled, release = threading.Event(), threading.Event()
    real_write = out._file.write

    def slow_write(line: str) -> int:
        stalled.set()
        release.wait()
        return real_write(line)

    out._file.write = slow_write
    serialized_by: list[str] = []

    class Probe:
        def to_line(self) -> str:
            serialized_by.append(threading.current_thread().name)
            return "{}\n"

    out.write(Probe())
    steps = threading.Thread(target=lambda: [record(observer, [prefill(f"r{i}", 8)], oldest=None)
                                             for i in range(50)])
    steps.start()
    steps.join(timeout=30)
    assert not steps.is_alive() and stalled.wait(timeout=30)  # 50 steps done, the file hangs
    assert path.read_text() == ""
    release.set()
    out.flush()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert serialized_by == ["prepack-stats"] and lines[0] == {}
    assert [x["step"] for x in lines[1:]] == list(range(1, 51))
    out._file.write = lambda line: (_ for _ in ()).throw(OSError("disk full"))
    record(observer, [prefill("x", 8)], oldest=None)
    record(observer, [prefill("y", 8)], oldest=None)
    out.flush()
    assert isinstance(out.error, OSError) and not out._records and observer.steps == 52
    assert warnings == [f"vllm-prepack: statistics file {path}: disk full; the records after "
                        "it are dropped"]
    out.close()
    assert len(path.read_text().splitlines()) == 51


def test_a_jsonl_file_is_written_once_the_engine_pauses():
    """Records are written once the queue stops growing (the engine paused), without a flush
    and long before ``interval_s``; the thread looks every ``poll_s``."""
    import time

    text = io.StringIO()
    out = JsonlFile(text, interval_s=3600, poll_s=0.01)
    observer = PackingObserver(budget=64, jsonl=out)
    for i in range(5):
        record(observer, [prefill(f"r{i}", 8)])
    deadline = time.monotonic() + 30
    while len(text.getvalue().splitlines()) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [json.loads(x)["step"] for x in text.getvalue().splitlines()] == [1, 2, 3, 4, 5]
    out.close()
