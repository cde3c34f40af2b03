"""``benchmarks.runner_cost``: the plugin's worker-side work on decode steps, timed on vLLM's
own step metadata (no timing asserted: only what ran and what was recorded)."""

from __future__ import annotations

import json

from benchmarks import runner_cost
from vllm_prepack.adapters.attention import pure_prefill_layout


def test_step_metadata_is_what_the_pure_prefill_test_reads():
    decode = runner_cost.step_metadata([1, 1, 1], [40, 7, 300], "cpu")
    assert pure_prefill_layout(decode) is None
    mixed = runner_cost.step_metadata([4, 1], [4, 9], "cpu")  # a prefill beside a decode
    assert pure_prefill_layout(mixed) is None
    pack = pure_prefill_layout(runner_cost.step_metadata([4, 2], [4, 2], "cpu"))
    assert pack is not None and pack.total_tokens == 6 and pack.num_seqs == 2


def test_the_look_runs_vllms_forward_when_there_is_no_pack():
    output = object()
    assert runner_cost._PluginForward().packed_unsupported is None  # a layer the path covers
    assert runner_cost._PluginForward().forward(None, None, None, None, None, object(),
                                                output) is output


def test_run_writes_one_row_per_batch_size(tmp_path):
    out = tmp_path / "runner_cost.json"
    result = runner_cost.main(["--decodes", "1,16", "--layers", "4", "--calls", "20",
                               "--out", str(out)])
    assert [r["decodes"] for r in result["rows"]] == [1, 16]
    for r in result["rows"]:
        assert r["step_us"] >= r["test_us"] > 0 and r["look_us_per_layer"] >= 0
    written = json.loads(out.read_text())
    assert written["rows"] == result["rows"] and written["layers"] == 4
    assert written["tensors_on"] in ("cpu", "cuda") and written["git_commit"]
