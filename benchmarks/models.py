"""Real architecture configs for dummy-weight benchmark models (no hub access needed)."""

from __future__ import annotations

import json
from pathlib import Path

_LLAMA_COMMON = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "attention_bias": False, "mlp_bias": False, "rms_norm_eps": 1e-05, "bos_token_id": 128000,
    "eos_token_id": 128001, "initializer_range": 0.02, "pretraining_tp": 1,
    "torch_dtype": "bfloat16", "use_cache": True, "vocab_size": 128256,
}
SHAPES = {
    # meta-llama/Llama-3.2-1B
    "llama-3.2-1b": {**_LLAMA_COMMON, "hidden_size": 2048, "intermediate_size": 8192,
                     "num_hidden_layers": 16, "num_attention_heads": 32,
                     "num_key_value_heads": 8, "head_dim": 64,
                     "max_position_embeddings": 131072, "rope_theta": 500000.0,
                     "tie_word_embeddings": True,
                     "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0,
                                      "low_freq_factor": 1.0,
                                      "original_max_position_embeddings": 8192,
                                      "rope_type": "llama3"}},
    # meta-llama/Llama-3.1-8B
    "llama-3.1-8b": {**_LLAMA_COMMON, "hidden_size": 4096, "intermediate_size": 14336,
                     "num_hidden_layers": 32, "num_attention_heads": 32,
                     "num_key_value_heads": 8, "head_dim": 128,
                     "max_position_embeddings": 131072, "rope_theta": 500000.0,
                     "tie_word_embeddings": False,
                     "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0,
                                      "low_freq_factor": 1.0,
                                      "original_max_position_embeddings": 8192,
                                      "rope_type": "llama3"}},
    # princeton-nlp/Sheared-LLaMA-1.3B (the paper's small model)
    "sheared-llama-1.3b": {**_LLAMA_COMMON, "hidden_size": 2048, "intermediate_size": 5504,
                           "num_hidden_layers": 24, "num_attention_heads": 16,
                           "num_key_value_heads": 16, "max_position_embeddings": 4096,
                           "rope_theta": 10000.0, "vocab_size": 32000, "bos_token_id": 1,
                           "eos_token_id": 2, "tie_word_embeddings": False},
    # meta-llama/Llama-2-7b-hf
    "llama-2-7b": {**_LLAMA_COMMON, "hidden_size": 4096, "intermediate_size": 11008,
                   "num_hidden_layers": 32, "num_attention_heads": 32,
                   "num_key_value_heads": 32, "max_position_embeddings": 4096,
                   "rope_theta": 10000.0, "vocab_size": 32000, "bos_token_id": 1,
                   "eos_token_id": 2, "tie_word_embeddings": False},
    # allenai/OLMoE-1B-7B-0924: mixture of experts (64 experts, 8 per token), for data
    # parallelism with vLLM's MoE engine cores (lockstep steps, prefill throttling)
    "olmoe-1b-7b": {"architectures": ["OlmoeForCausalLM"], "model_type": "olmoe",
                    "hidden_act": "silu", "attention_bias": False, "clip_qkv": None,
                    "hidden_size": 2048, "intermediate_size": 1024, "num_hidden_layers": 16,
                    "num_attention_heads": 16, "num_key_value_heads": 16,
                    "num_experts": 64, "num_experts_per_tok": 8, "norm_topk_prob": False,
                    "output_router_logits": False, "router_aux_loss_coef": 0.01,
                    "max_position_embeddings": 4096, "rope_theta": 10000.0,
                    "rope_scaling": None, "rms_norm_eps": 1e-05, "initializer_range": 0.02,
                    "vocab_size": 50304, "pad_token_id": 1, "eos_token_id": 50279,
                    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True},
}


def config_dir(shape: str, root: str | Path = ".models") -> Path:
    """Write ``<root>/<shape>/config.json`` (config only: load with ``load_format='dummy'``)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown model shape {shape!r}; accepted: {', '.join(SHAPES)}")
    out = Path(root) / shape
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(SHAPES[shape], indent=2))
    return out
