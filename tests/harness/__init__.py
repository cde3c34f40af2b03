"""The tests' own harness, importable as ``tests.harness`` from the repository root:

- :mod:`tests.harness.sched`: vLLM's real scheduler and KV cache manager driven without a model;
- :mod:`tests.harness.server`: one ``vllm serve`` process on 127.0.0.1;
- :mod:`tests.harness.tiny_model`: a tiny Llama model and tokenizer built on local disk.

The benchmarks may import it; it never imports the benchmarks.
"""
