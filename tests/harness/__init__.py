"""The tests' own harness, importable as ``tests.harness`` from the repository root (by the
tests in tests/unit, tests/vllm and tests/e2e; fixtures stay in tests/conftest.py):

- :mod:`tests.harness.env`: the tests' environment, engine arguments, ``python -c`` and the
  ``vllm`` command line in a subprocess, seeded random prompts (no vLLM);
- :mod:`tests.harness.kernels`: what the packed-attention kernel tests share (no vLLM);
- :mod:`tests.harness.sched`: vLLM's real scheduler and KV cache manager driven without a model;
- :mod:`tests.harness.server`: one ``vllm serve`` process on 127.0.0.1; ``serve()`` with the
  tests' environment and a JSON POST;
- :mod:`tests.harness.equivalence`: one arm of a greedy-equivalence run, in its own process;
- :mod:`tests.harness.tiny_model`: a tiny Llama model and tokenizer built on local disk.

The benchmarks may import it; it never imports the benchmarks.
"""
