"""The prepack scheduler in a real engine: every policy, and vLLM's priority scheduling, give
the same greedy tokens as stock vLLM."""

from __future__ import annotations

import pytest
from vllm.v1.core.sched.scheduler import Scheduler

from vllm_prepack.adapters.scheduler import PrepackSyncScheduler

# -- a real engine -----------------------------------------------------------------------------


@pytest.mark.engine
def test_every_policy_token_identical_in_a_real_engine(tiny_model, engine_lock):
    """Each policy, in a real CPU engine (fp32, eager): greedy output equals stock vLLM's, and
    the engine core ran our class with its counters moving."""
    import gc

    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    import vllm_prepack
    from tests.harness.env import ENGINE_ARGS, MAX_MODEL_LEN, random_prompts

    prompts = [TokensPrompt(prompt_token_ids=p)
               for p in random_prompts(40, seed=9, max_len=MAX_MODEL_LEN - 8)]
    params = SamplingParams(temperature=0, max_tokens=6)

    def run(**kwargs):
        llm = LLM(tiny_model, **ENGINE_ARGS, max_num_batched_tokens=1024, **kwargs)
        scheduler = llm.llm_engine.engine_core.engine_core.scheduler
        outs = [list(o.outputs[0].token_ids) for o in llm.generate(prompts, params,
                                                                   use_tqdm=False)]
        summary = getattr(scheduler, "prepack_observer", None)
        result = outs, type(scheduler), summary and summary.summary()
        del llm, scheduler
        gc.collect()
        return result

    stock, stock_cls, _ = run()
    assert stock_cls is Scheduler
    for policy in ("stretch", "fcfs", "sjf", "hrrn"):
        ours, cls, summary = run(**vllm_prepack.engine_kwargs(policy=policy))
        assert cls is PrepackSyncScheduler
        assert summary["planned_steps"] > 0 and summary["admitted"] == len(prompts)
        assert summary["plan_adherence"] > 0.5
        if policy in ("stretch", "sjf"):
            assert summary["overtakes"] > 0  # the order really changed
        assert ours == stock, policy


@pytest.mark.engine
def test_priority_policy_token_identical_in_a_real_engine(tiny_model, engine_lock):
    """--scheduling-policy priority, requests of two priorities, in a real CPU engine (fp32,
    eager): greedy output equals stock vLLM's with the same policy, and the engine core ran
    our class with plans."""
    import gc

    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    import vllm_prepack
    from tests.harness.env import ENGINE_ARGS, MAX_MODEL_LEN, random_prompts

    prompts = [TokensPrompt(prompt_token_ids=p)
               for p in random_prompts(32, seed=11, max_len=MAX_MODEL_LEN // 2)]
    priority = [i % 2 for i in range(len(prompts))]
    params = SamplingParams(temperature=0, max_tokens=6)

    def run(**kwargs):
        llm = LLM(tiny_model, **ENGINE_ARGS, max_num_batched_tokens=1024,
                  scheduling_policy="priority", **kwargs)
        scheduler = llm.llm_engine.engine_core.engine_core.scheduler
        outs = [list(o.outputs[0].token_ids)
                for o in llm.generate(prompts, params, priority=priority, use_tqdm=False)]
        observer = getattr(scheduler, "prepack_observer", None)
        result = outs, type(scheduler), observer and observer.summary()
        del llm, scheduler
        gc.collect()
        return result

    stock, stock_cls, _ = run()
    assert stock_cls is Scheduler
    ours, cls, summary = run(**vllm_prepack.engine_kwargs())
    assert cls is PrepackSyncScheduler
    assert summary["planned_steps"] > 0 and summary["admitted"] == len(prompts)
    assert ours == stock
