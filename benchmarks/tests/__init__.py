"""The benchmark tests: a package, so its conftest (``benchmarks.tests.conftest``) never
shadows tests/conftest.py, which the repository tests import as ``conftest``."""
