#!/usr/bin/env bash
# The benchmark runs behind benchmarks/results/*_h100.json and *_h200x2.json, one phase per
# device call (each phase stays under 10 minutes). Run from the repository root on a GPU
# machine with vLLM 0.32.0 and this project installed; results go to $OUT (default
# benchmarks/results), one log per run next to them.
#
#   bash benchmarks/gpu_runs.sh paper    # 1 GPU: paper reproduction, Poisson offline A/B
#   bash benchmarks/gpu_runs.sh mixes    # 1 GPU: the Poisson A/B of `paper`, stock and the default
#   bash benchmarks/gpu_runs.sh nochunk  # 1 GPU: Llama-3.1-8B offline A/B, chunking off (the default
#                                     # and packed attention on)
#   bash benchmarks/gpu_runs.sh serve    # 1 GPU: serving A/B (vllm bench serve)
#   bash benchmarks/gpu_runs.sh equiv1   # 1 GPU: greedy equivalence (Llama-3.2-1B), batch-invariant
#   bash benchmarks/gpu_runs.sh equiv    # 2 GPUs: TP=2 greedy equivalence (Llama-3.1-8B)
#   bash benchmarks/gpu_runs.sh pp       # 2 GPUs: PP=2 greedy equivalence (Llama-3.2-1B)
#   bash benchmarks/gpu_runs.sh tp       # 2 GPUs: Llama-3.1-8B offline A/B at TP=2
#   bash benchmarks/gpu_runs.sh dp       # 2 GPUs: serving A/B of the 1B shape at DP=2
#   bash benchmarks/gpu_runs.sh moe      # 2 GPUs: serving A/B of a MoE (OLMoE-1B-7B shape) at DP=2
#                                     # with --prefill-schedule-interval 4 (vLLM's throttling)
#   bash benchmarks/gpu_runs.sh trace-llm    # 1 GPU: Azure conversation trace replay, Llama-3.1-8B,
#                                         # LLMEngine (SchedulerConfig defaults) or LLM, ~8 min
#   bash benchmarks/gpu_runs.sh trace-serve  # 1 GPU: the same trace through vllm serve, ~8-9 min
#   bash benchmarks/gpu_runs.sh planner-cost # the GPU host's CPU: the scheduler's own time per
#                                         # step by waiting-queue size (no GPU work), and the
#                                         # packed path's worker code on decode steps, ~2 min
#
# Trace phases read the Azure conversation trace (CC-BY 4.0, Patel et al., Splitwise, ISCA
# 2024; see ../shared/data/README.md) from $TRACE, else ../shared/data/azure_conv_2023.csv,
# else .data/azure_conv_2023.csv (copy it there and carry .data to a lent GPU machine: the
# shared folder beside the checkout does not travel). Their sizes can be set from the
# environment: N (requests), START (first row), REPS, BUDGET (max_num_batched_tokens),
# COMPRESSION (trace-llm; or LOADS, multiples of stock's saturation rate), LOADS (trace-serve),
# ARMS (trace-llm), ENTRY (trace-llm: llmengine or llm), PREPACK_ARGS (trace-serve: more
# --prepack-* options), GRAPHS (1 for vLLM's default torch.compile and CUDA graphs instead of
# eager; trace-llm then times compiled steps), VARIANT (trace-serve: a tag in the file name),
# SATURATION (stock's saturation rate in req/s from an earlier part of the same grid: not
# measured again), WARMUP_REPLAY (trace-serve: 1 for serve_ab's --warmup-replay), TIME_BUDGET
# (trace-serve: seconds after which no pair starts, default 520; the run is stopped 60 s later),
# KV_BLOCKS (trace-serve: KV cache blocks of each server, vLLM's --num-gpu-blocks-override),
# AA (trace-serve: 1 for serve_ab's --aa, a second stock server in the prepack arm's place:
# the pairs' noise floor; name tagged _aa), FIRST (trace-serve: serve_ab's --first-server, the
# arm whose server starts first, prepack unless set: alternate it over invocations),
# GPU_UTIL (trace-llm: each engine's gpu_memory_utilization, default 0.4).
set -uo pipefail
phase=${1:?usage: bash benchmarks/gpu_runs.sh paper|mixes|nochunk|serve|equiv1|equiv|pp|tp|dp|moe|trace-llm|trace-serve|planner-cost [tag]}
tag=${2:-$(python3 -c "import torch; n=torch.cuda.get_device_name(0).split()[1].lower(); \
c=torch.cuda.device_count(); print(n if c == 1 else f'{n}x{c}')")}
out=${OUT:-benchmarks/results}
mkdir -p "$out"
py=python3
eager='"enforce_eager": true, "max_model_len": 8192'

run() {  # run NAME TIMEOUT_S CMD...: one benchmark, its log next to its JSON
  local name=$1 limit=$2
  shift 2
  echo "== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "== $name exit $? ($(date -u +%H:%M:%S))"
  tail -n 12 "$out/$name.log"
}

poisson() {  # poisson NAME ARMS: Llama-3.2-1B shape, two mixes at 400 req/s (Poisson), eager
  run "$1" 220 $py -m benchmarks.ab --model-shape llama-3.2-1b \
    --workload lognormal,sharegpt --n 1024 --max-len 8000 --rate 400 --reps 3 --arms "$2" \
    --engine-args "{$eager, \"gpu_memory_utilization\": 0.25}" --out "$out/$1.json"
}

progress() {  # the per-run lines of a log (tqdm's bar shares their lines)
  local cr=$'\r'
  grep -aoE "\[[0-9]{2}:[0-9]{2}:[0-9]{2}\] [^$cr]*|(saturation|FAILED|partial|trace )[^$cr]*" "$1" |
    head -n 60
}

[ -f .models/tiny-llama/tokenizer.json ] || $py -m tests.harness.tiny_model .models/tiny-llama

# Phases that start `vllm serve` first check that its command and API server import (without
# one of their dependencies, e.g. orjson for vLLM 0.33, each server fails after a minute).
case $phase in
serve|dp|moe|trace-serve)
  $py -c "import vllm.entrypoints.cli.serve, vllm.entrypoints.openai.api_server" || {
    echo "vllm serve cannot start here: its command or API server fails to import (above);" \
      "install the missing package (vLLM 0.33 needs orjson)" >&2
    exit 3
  } ;;
esac

case $phase in
paper)
  run "paper_$tag" 280 $py -m benchmarks.paper --model-shape sheared-llama-1.3b,llama-2-7b \
    --workload mmlu --n 256 --batch-sizes 4,8,16,32,64 \
    --methods padded,sorted,prepacked,prepacked_flat --reps 3 --dtype float16 \
    --out "$out/paper_$tag.json"
  poisson "ab_1b_poisson_$tag" stock,prepack,prepack-packed
  ;;
mixes)
  poisson "ab_1b_poisson_default_$tag" stock,prepack-default
  ;;
nochunk)
  run "ab_8b_nochunk_$tag" 500 $py -m benchmarks.ab --model-shape llama-3.1-8b \
    --workload lognormal,mmlu,sharegpt --n 512 --max-len 8000 --reps 3 \
    --arms stock,prepack-default,prepack-packed --chunked off --max-num-batched-tokens 8192 \
    --engine-args "{$eager, \"gpu_memory_utilization\": 0.3}" --out "$out/ab_8b_nochunk_$tag.json"
  ;;
serve)
  run "serve_1b_$tag" 420 $py -m benchmarks.serve_ab --model-shape llama-3.2-1b \
    --tokenizer .models/tiny-llama --workload lognormal --n 1000 --max-len 8000 \
    --output-len 32 --load-factors 0.5,0.8,1.0,1.2 --reps 2 --time-budget-s 380 \
    --serve-args "--enforce-eager --max-model-len 8192" --out "$out/serve_1b_$tag.json"
  ;;
equiv1)
  VLLM_BATCH_INVARIANT=1 run "equivalence_1b_$tag" 300 $py -m benchmarks.equivalence \
    --model-shape llama-3.2-1b --arms stock,prepack,prepack-packed --n 64 \
    --engine-args '{"enforce_eager": true, "gpu_memory_utilization": 0.4, "max_model_len": 8192}' \
    --out "$out/equivalence_1b_$tag.json"
  ;;
equiv)
  VLLM_BATCH_INVARIANT=1 run "equivalence_8b_tp2_$tag" 300 $py -m benchmarks.equivalence \
    --model-shape llama-3.1-8b --tensor-parallel-size 2 --arms stock,prepack-packed --n 48 \
    --engine-args '{"enforce_eager": true, "max_model_len": 4096}' \
    --out "$out/equivalence_8b_tp2_$tag.json"
  ;;
pp)
  VLLM_BATCH_INVARIANT=1 run "equivalence_1b_pp2_$tag" 240 $py -m benchmarks.equivalence \
    --model-shape llama-3.2-1b --pipeline-parallel-size 2 --arms stock,prepack-packed \
    --n 48 --engine-args '{"enforce_eager": true, "max_model_len": 4096}' \
    --out "$out/equivalence_1b_pp2_$tag.json"
  ;;
tp)
  run "ab_8b_tp2_$tag" 500 $py -m benchmarks.ab --model-shape llama-3.1-8b \
    --workload lognormal,mmlu,sharegpt --n 512 --max-len 8000 --reps 3 \
    --arms stock,prepack-packed \
    --engine-args "{$eager, \"gpu_memory_utilization\": 0.4, \"tensor_parallel_size\": 2}" \
    --out "$out/ab_8b_tp2_$tag.json"
  ;;
dp)
  # Two DP=2 servers start in ~100 s each on 2x H200: the budget leaves ~250 s for 17 runs.
  run "serve_1b_dp2_$tag" 575 $py -m benchmarks.serve_ab --model-shape llama-3.2-1b \
    --tokenizer .models/tiny-llama --workload lognormal --n 1000 --max-len 8000 \
    --output-len 32 --load-factors 0.5,0.8,1.0,1.2 --reps 2 --time-budget-s 520 \
    --serve-args "--enforce-eager --max-model-len 8192 --data-parallel-size 2" \
    --out "$out/serve_1b_dp2_$tag.json"
  ;;
moe)
  # A MoE model keeps vLLM's DP engine cores in lockstep (DPEngineCoreProc), where
  # --prefill-schedule-interval throttles prefills; dense DP ranks are independent engines.
  # Its token dispatch needs vLLM's pynccl, which binds ncclCommSuspend (NCCL 2.28 lacks it,
  # 2.32.3 has it): where the system NCCL is older, point VLLM_NCCL_SO_PATH at a newer
  # libnccl.so.2 (e.g. from the nvidia-nccl-cu13 wheel).
  $py -c "from vllm.distributed.device_communicators.pynccl_wrapper import NCCLLibrary as L
print('pynccl: NCCL', L().ncclGetVersion())" || {
    echo "vLLM's pynccl cannot load NCCL here (MoE data parallelism needs it);" \
      "set VLLM_NCCL_SO_PATH to a newer libnccl.so.2 (one with ncclCommSuspend)" >&2
    exit 3
  }
  run "serve_moe_dp2_$tag" 500 $py -m benchmarks.serve_ab --model-shape olmoe-1b-7b \
    --tokenizer .models/tiny-llama --workload lognormal --n 1000 --max-len 4000 \
    --output-len 32 --load-factors 0.8,1.0 --reps 2 --time-budget-s 440 \
    --serve-args "--enforce-eager --max-model-len 4096 --data-parallel-size 2 \
--prefill-schedule-interval 4" --out "$out/serve_moe_dp2_$tag.json"
  ;;
trace-llm)
  # Llama-3.1-8B shape, eager, LLMEngine.from_engine_args: SchedulerConfig's 128 sequences
  # (ENTRY=llm: LLM(...), its 1024); prefix caching at vLLM's default (on), fresh prompts each
  # repetition. One engine per arm (all alive, GPU_UTIL of the GPU each, default 0.4: three
  # arms need 0.33 or less), 3 repetitions of one load, arms alternating. GRAPHS=1: compiled,
  # CUDA graphs (name tagged _graphs).
  budget=${BUDGET:-2048}
  entry=${ENTRY:-llmengine}
  if [ "${GRAPHS:-0}" = 1 ]; then mode='"max_model_len": 8192' mode_tag=_graphs
  else mode=$eager mode_tag=; fi
  [ "$entry" = llmengine ] || mode_tag="${mode_tag}_$entry"
  if [ -n "${LOADS:-}" ]; then load=(--load-factors "$LOADS"); load_tag=${LOADS//,/_}sat
  else load=(--compression "${COMPRESSION:-4}"); load_tag=${COMPRESSION:-4}x; fi
  name="trace_llm_8b_b${budget}_${load_tag}${mode_tag}_$tag"
  run "$name" 570 $py -m benchmarks.ab --model-shape llama-3.1-8b --entry-point "$entry" \
    --workload trace ${TRACE:+--trace "$TRACE"} --trace-start "${START:-0}" --n "${N:-500}" \
    "${load[@]}" --reps "${REPS:-3}" --arms "${ARMS:-stock,prepack-default}" \
    --max-num-batched-tokens "$budget" --run-timeout 240 \
    ${SATURATION:+--saturation-rate "$SATURATION"} \
    --engine-args "{$mode, \"gpu_memory_utilization\": ${GPU_UTIL:-0.4}}" --out "$out/$name.json"
  progress "$out/$name.log"
  ;;
trace-serve)
  # vllm serve with and without --scheduler prepack (both alive, 0.4 of the GPU each),
  # vLLM's default max_num_seqs (1024 on an H200), budget BUDGET, loads LOADS x stock's
  # saturation rate on the window (measured first), exact input/output lengths, fixed TTFT
  # SLO for goodput (no calibration run). Pairs that would end past the time budget are
  # skipped (status "partial"); run the rest with LOADS=... in another call.
  # GRAPHS=1: vLLM's default torch.compile and CUDA graphs instead of --enforce-eager (name
  # tagged _graphs; the servers' compile cache stays on a warm machine for the next call).
  # WARMUP_REPLAY=1: each server replays the trace once, unmeasured, before its first run.
  budget=${BUDGET:-2048}
  loads=${LOADS:-1.0,1.5}
  if [ "${GRAPHS:-0}" = 1 ]; then mode= mode_tag=_graphs; else mode=--enforce-eager mode_tag=; fi
  if [ "${WARMUP_REPLAY:-0}" = 1 ]; then warm=--warmup-replay; else warm=; fi
  if [ "${AA:-0}" = 1 ]; then aa=--aa aa_tag=_aa; else aa= aa_tag=; fi
  first=${FIRST:+--first-server $FIRST}
  # KV_BLOCKS: vLLM's --num-gpu-blocks-override (both arms), e.g. 7233, an H100's KV cache at
  # 0.4 of its memory, to run the H100's KV pressure on another GPU (name tagged _kv<N>).
  kv=${KV_BLOCKS:+--num-gpu-blocks-override $KV_BLOCKS}
  name="trace_serve_8b_b${budget}_${loads//,/_}${mode_tag}${KV_BLOCKS:+_kv$KV_BLOCKS}"
  name="$name$aa_tag${VARIANT:+_$VARIANT}_$tag"
  budget_s=${TIME_BUDGET:-520}
  run "$name" $((budget_s + 60)) $py -m benchmarks.serve_ab --model-shape llama-3.1-8b \
    --tokenizer .models/tiny-llama --workload trace ${TRACE:+--trace "$TRACE"} \
    --trace-start "${START:-0}" --n "${N:-300}" --load-factors "$loads" --reps "${REPS:-3}" \
    --ttft-slo-ms "${SLO_MS:-2000}" --time-budget-s "$budget_s" --max-duration-s 200 \
    --serve-args "$mode --max-model-len 8192 --max-num-batched-tokens $budget $kv" \
    ${SATURATION:+--saturation-rate "$SATURATION"} \
    ${PREPACK_ARGS:+--prepack-args "$PREPACK_ARGS"} $warm $aa $first --out "$out/$name.json"
  progress "$out/$name.log"
  ;;
planner-cost)
  run "planner_cost_$tag" 300 $py -m benchmarks.planner_cost --waiting 0,300,1000 --running 128 \
    --out "$out/planner_cost_$tag.json"
  run "planner_cost_admitting_$tag" 300 $py -m benchmarks.planner_cost --waiting 0,300,1000 \
    --running 128 --admitting --out "$out/planner_cost_admitting_$tag.json"
  run "runner_cost_$tag" 120 $py -m benchmarks.runner_cost --decodes 1,128,1024 --layers 32 \
    --out "$out/runner_cost_$tag.json"
  ;;
*)
  echo "unknown phase $phase; accepted: paper, mixes, nochunk, serve, equiv1, equiv, pp, tp, dp, moe," \
    "trace-llm, trace-serve, planner-cost" >&2
  exit 2
  ;;
esac
