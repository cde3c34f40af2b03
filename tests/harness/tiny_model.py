"""Build a tiny Llama model and tokenizer on local disk (random weights, no hub access).

Used by the tests, ``make demo`` and the CPU benchmark smoke runs::

    python -m tests.harness.tiny_model .models/tiny-llama
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

WORDS = (
    "the a of to and in is it that for on with as was be by this are or from at an not "
    "but have all can more one which their will about model token prompt pack prefill cache "
    "fast slow long short first second time step batch queue serve engine vllm plugin "
    "block page attention scheduler request output input length budget order"
).split()


def build(path: str | os.PathLike, *, seed: int = 0, hidden: int = 128, layers: int = 2,
          heads: int = 4, kv_heads: int = 2, vocab_words: int = 512) -> Path:
    """Write ``config.json``, fp32 ``model.safetensors`` and a word-level tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(path)
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    specials = ["<unk>", "<s>", "</s>"]
    words = list(dict.fromkeys(WORDS + [f"w{i}" for i in range(vocab_words)]))
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    fast.chat_template = (
        "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}assistant : {% endif %}"
    )
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=2048, bos_token_id=1, eos_token_id=2,
        tie_word_embeddings=False, torch_dtype="float32",
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    cfg = json.loads((out / "config.json").read_text())
    cfg["torch_dtype"] = cfg["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", nargs="?", default=".models/tiny-llama")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(build(args.path, seed=args.seed))
