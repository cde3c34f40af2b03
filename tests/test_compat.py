"""The version gate names every supported vLLM release series."""

from __future__ import annotations

import pytest

from vllm_prepack import compat


@pytest.mark.parametrize("version", ["0.32.0", "0.32.0+cpu", "0.32.1", "0.33.0", "0.33.0+cu130",
                                     "0.33.2"])
def test_supported_versions_pass_the_gate(version):
    assert compat.is_tested_version(version)


@pytest.mark.parametrize("version", ["0.31.1", "0.34.0", "0.3", "0.330.0", "1.0.0", "unknown"])
def test_other_versions_are_refused_naming_both(version):
    assert not compat.is_tested_version(version)
    message = compat.untested_message(version)
    assert version in message and "0.32.x" in message and "0.33.x" in message


def test_installed_vllm_is_supported():
    assert compat.is_tested_version(compat.installed_vllm_version())
