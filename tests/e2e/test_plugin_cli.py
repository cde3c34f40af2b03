"""The plugin through vLLM's command line and engines: --help and bad options, VLLM_PLUGINS,
bench throughput, serving, engine_kwargs, and the patches applied to a copy of vLLM."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.harness.env import (
    ENGINE_ARGS,
    MAX_MODEL_LEN,
    ROOT,
    random_prompts,
    run_vllm,
    subprocess_env,
)
from tests.harness.server import serve

PATCHES = sorted((ROOT / "patches").glob("*.patch"))


@pytest.mark.cli
def test_help_lists_scheduler_and_bogus_value_fails(tiny_model):
    out = run_vllm(["serve", "--help=all"])
    assert out.returncode == 0, out.stderr
    assert "--scheduler {default,prepack}" in out.stdout
    assert "--prepack-policy {stretch,fcfs,sjf,hrrn}" in out.stdout
    assert "--prepack-stretch" in out.stdout and "--prepack-lookahead" in out.stdout
    assert "--prepack-split" not in out.stdout and "--prepack-max-wait-s" not in out.stdout
    bad = run_vllm(["serve", tiny_model, "--scheduler", "bogus"])
    assert bad.returncode != 0
    assert "invalid choice: 'bogus'" in bad.stderr and "default" in bad.stderr
    assert "prepack" in bad.stderr


@pytest.mark.cli
@pytest.mark.parametrize(
    "args, message",
    [
        (["--scheduler", "prepack", "--prepack-stretch", "-1"],
         ["prepack stretch must be a finite number >= 0, got -1"]),
        (["--scheduler", "prepack", "--prepack-stretch", "nan"], ["stretch", "nan"]),
        (["--scheduler", "prepack", "--prepack-lookahead", "0"],
         ["prepack lookahead must be an integer >= 1, got 0"]),
        (["--scheduler", "prepack", "--prepack-policy", "ttft"],
         ["invalid choice: 'ttft'", "stretch", "fcfs", "sjf", "hrrn"]),
        (["--scheduler", "prepack", "--prepack-policy", "lifo"], ["invalid choice: 'lifo'"]),
        (["--scheduler", "prepack", "--prepack-split", "whole"], ["--prepack-split"]),
        (["--scheduler", "prepack", "--prepack-max-wait-s", "5"], ["--prepack-max-wait-s"]),
        (["--prepack-policy", "fcfs"], ["only apply with --scheduler prepack"]),
    ],
)
def test_bad_prepack_options_fail_clearly(tiny_model, args, message):
    out = run_vllm(["serve", tiny_model, *args], timeout=240)
    assert out.returncode != 0
    for words in message:
        assert words in out.stdout + out.stderr, (words, (out.stdout + out.stderr)[-3000:])


@pytest.mark.cli
def test_plugin_disabled_through_vllm_plugins(tiny_model):
    """With the plugin disabled, vLLM's own CLI error comes back, unchanged."""
    out = run_vllm(["serve", tiny_model, "--scheduler", "prepack"], VLLM_PLUGINS="")
    assert out.returncode != 0
    # argparse prefix matching: --scheduler is an ambiguous abbreviation there.
    assert "error: ambiguous option: --scheduler could match --scheduler-cls" in out.stderr
    assert "vllm-prepack" not in out.stdout + out.stderr


@pytest.mark.cli
def test_bench_throughput_selects_prepack(tiny_model, engine_lock):
    out = run_vllm(["bench", "throughput", "--model", tiny_model, "--scheduler", "prepack",
                    "--prepack-policy", "fcfs", "--dataset-name", "random",
                    "--random-input-len", "64", "--random-output-len", "4", "--num-prompts", "16",
                    "--dtype", "float32", "--enforce-eager", "--max-model-len", "1024",
                    "--kv-cache-memory-bytes", str(64 << 20)], timeout=300)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert "Throughput:" in log
    assert re.search(r"EngineCore pid=\d+\).*Engine core scheduler class: "
                     r"vllm_prepack\.adapters\.scheduler\.PrepackSyncScheduler", log), log[-3000:]
    assert "'policy': 'fcfs'" in log


def _completion_texts(server, prompts, model):
    texts = []
    for p in prompts:
        r = server.post("/v1/completions", {
            "model": model, "prompt": p, "max_tokens": 6, "temperature": 0,
        })
        texts.append(r["choices"][0]["text"])
    return texts


SERVE_ARGS = [
    "--dtype", "float32", "--enforce-eager", "--max-model-len", str(MAX_MODEL_LEN),
    "--kv-cache-memory-bytes", str(64 << 20), "--seed", "0",
    "--distributed-executor-backend", "mp",
]


@pytest.mark.cli
def test_serve_prepack_and_default_multiprocess(tiny_model, tmp_path, engine_lock):
    prompts = random_prompts(12, seed=3, max_len=MAX_MODEL_LEN - 8)
    env = dict(VLLM_ENABLE_V1_MULTIPROCESSING="1")
    with serve([tiny_model, *SERVE_ARGS, "--scheduler", "prepack",
                "--prepack-policy", "stretch"], tmp_path / "prepack.log", **env) as s:
        prepack = _completion_texts(s, prompts, tiny_model)
        chat = s.post("/v1/chat/completions", {
            "model": tiny_model, "max_tokens": 5, "temperature": 0,
            "messages": [{"role": "user", "content": "the model is fast"}],
        })
        log = s.log()
    assert chat["choices"][0]["message"]["content"] is not None
    assert chat["usage"]["completion_tokens"] > 0
    registered = re.findall(r"\(([\w-]+) pid=(\d+)\).*vllm-prepack \S+ registered in process", log)
    roles = {role for role, _ in registered}
    pids = {pid for _, pid in registered}
    assert {"APIServer", "EngineCore"} <= roles and any("Worker" in r for r in roles), registered
    assert len(pids) >= 3, registered
    assert re.search(r"EngineCore pid=\d+\).*Engine core scheduler class: "
                     r"vllm_prepack\.adapters\.scheduler\.PrepackSyncScheduler", log), log

    with serve([tiny_model, *SERVE_ARGS, "--scheduler", "default"],
               tmp_path / "default.log", **env) as s:
        default = _completion_texts(s, prompts, tiny_model)
        log = s.log()
    assert re.search(r"EngineCore pid=\d+\).*Engine core scheduler class: "
                     r"vllm\.v1\.core\.sched\.scheduler\.Scheduler$", log, re.M), log
    assert "vllm_prepack.adapters.scheduler" not in log
    assert prepack == default
    assert all(isinstance(t, str) for t in prepack)


def _generate(model, prompts, **kwargs):
    import gc

    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model, **ENGINE_ARGS, **kwargs)
    scheduler = llm.llm_engine.engine_core.engine_core.scheduler
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts],
                        SamplingParams(temperature=0, max_tokens=8), use_tqdm=False)
    info = (type(scheduler), getattr(scheduler, "prepack_observer", None))
    del llm, scheduler
    gc.collect()
    return [list(o.outputs[0].token_ids) for o in outs], info


@pytest.mark.engine
def test_engine_kwargs_and_cli_mapping_token_identical(tiny_model, engine_lock):
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    from vllm.v1.core.sched.scheduler import Scheduler

    import vllm_prepack
    from vllm_prepack.adapters.scheduler import PrepackSyncScheduler

    prompts = random_prompts(64, seed=1, max_len=MAX_MODEL_LEN - 8)
    stock, (stock_cls, _) = _generate(tiny_model, prompts, max_num_batched_tokens=2048)
    assert stock_cls is Scheduler

    ours, (cls, observer) = _generate(
        tiny_model, prompts, max_num_batched_tokens=2048, **vllm_prepack.engine_kwargs()
    )
    assert cls is PrepackSyncScheduler
    assert observer.planned_steps > 0 and observer.admitted == len(prompts)
    assert ours == stock

    vllm_prepack.register()
    parser = EngineArgs.add_cli_args(FlexibleArgumentParser())
    args = parser.parse_args(["--model", tiny_model, "--scheduler", "prepack",
                              "--prepack-policy", "fcfs",
                              "--max-num-batched-tokens", "2048"])
    engine_args = EngineArgs.from_cli_args(args)
    assert engine_args.additional_config["prepack"] == {"policy": "fcfs"}
    kwargs = {k: getattr(engine_args, k) for k in
              ("scheduler_cls", "additional_config", "max_num_batched_tokens")}
    via_cli, (cls, observer) = _generate(tiny_model, prompts, **kwargs)
    assert cls is PrepackSyncScheduler and observer.planned_steps > 0
    assert via_cli == stock


def _patched_vllm(tmp_path: Path) -> Path:
    """A copy of the installed vLLM (hard links) with every patch applied."""
    import vllm

    src = Path(vllm.__file__).parent
    root = tmp_path / "patched"
    root.mkdir()
    subprocess.run(["cp", "-al", str(src), str(root / "vllm")], check=True)
    for patch in PATCHES:
        touched = re.findall(r"^\+\+\+ b/(\S+)", patch.read_text(), re.M)
        for rel in touched:  # break the hard link before editing
            f = root / rel
            data = f.read_bytes()
            f.unlink()
            f.write_bytes(data)
        out = subprocess.run(["patch", "-p1", "--forward", "-i", str(patch)], cwd=root,
                             capture_output=True, text=True)
        assert out.returncode == 0, f"{patch.name} does not apply:\n{out.stdout}{out.stderr}"
    return root


@pytest.mark.cli
def test_patches_apply_and_work_without_the_plugin(tiny_model, tmp_path, engine_lock):
    if shutil.which("patch") is None:
        pytest.fail("GNU patch is required to check patches/ (apt-get install patch)")
    root = _patched_vllm(tmp_path)
    env = dict(PYTHONPATH=str(root), VLLM_PLUGINS="")
    cli = "import sys; from vllm.entrypoints.cli.main import main; sys.argv[0] = 'vllm'; main()"
    def vllm_cli(*args):
        return subprocess.run([sys.executable, "-c", cli, *args], capture_output=True,
                              text=True, timeout=240, env=subprocess_env(**env))

    help_out = vllm_cli("serve", "--help=all")
    assert help_out.returncode == 0, help_out.stderr
    assert "--scheduler {default,prepack}" in help_out.stdout
    assert "--prepack-policy" not in help_out.stdout  # the plugin is disabled
    bad = vllm_cli("serve", tiny_model, "--scheduler", "bogus")
    assert bad.returncode != 0 and "invalid choice: 'bogus'" in bad.stderr
    # The patched engine resolves the name and logs the class its engine core built.
    code = textwrap.dedent(f"""
        import os
        from vllm import LLM, SamplingParams
        import vllm_prepack.adapters as adapters
        if __name__ == "__main__":
            for name in ("prepack", "default"):
                llm = LLM({tiny_model!r}, scheduler=name, **{ENGINE_ARGS!r})
                s = llm.llm_engine.engine_core.engine_core.scheduler
                print("built", name, type(s).__module__ + "." + type(s).__qualname__)
                llm.generate(["the model is"], SamplingParams(max_tokens=2), use_tqdm=False)
                del llm, s
            # attention-backend-selection: a hook decides per engine, outside vLLM's cache.
            from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend
            from vllm.v1.attention.selector import register_attn_backend_hook

            class Mine(CPUAttentionBackend):
                pass

            def hook(selected, vllm_config, selector_config):
                wanted = vllm_config.additional_config.get("mine")
                return Mine if wanted and selected is CPUAttentionBackend else None

            register_attn_backend_hook(hook)
            register_attn_backend_hook(hook)
            def backends(worker):
                return sorted({{m.attn_backend.__name__ for m in worker.model_runner.model.modules()
                                if hasattr(m, "attn_backend")}})
            for mine in (True, False):
                llm = LLM({tiny_model!r}, additional_config={{"mine": mine}}, **{ENGINE_ARGS!r})
                print("backends", mine, llm.collective_rpc(backends)[0])
                del llm
            print("hooks", sorted(adapters.installed_hooks()))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300,
                         env=subprocess_env(VLLM_ENABLE_V1_MULTIPROCESSING="0", **env))
    log = out.stdout + out.stderr
    assert out.returncode == 0, log
    assert "built prepack vllm_prepack.adapters.scheduler.PrepackSyncScheduler" in log
    assert "built default vllm.v1.core.sched.scheduler.Scheduler" in log
    assert "Engine core scheduler class: vllm_prepack.adapters.scheduler." in log
    assert "backends True ['Mine']" in log and "backends False ['CPUAttentionBackend']" in log
    assert "hooks []" in log  # nothing came from the plugin: the patches did it
