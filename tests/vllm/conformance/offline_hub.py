"""An offline Hugging Face hub cache with the models vLLM's scheduler tests name.

The tests build ``ModelConfig`` for ``facebook/opt-125m`` and ``llava-hf/llava-1.5-7b-hf``,
vLLM 0.33.0's also for ``Qwen/Qwen3-Next-80B-A3B-Instruct`` (a hybrid model: linear and full
attention layers), 0.34.0's also for ``Qwen/Qwen3-0.6B``, configuration only: no weights are
read. CI reaches only the package
registry, so their configurations are written here from transformers' config classes with the
real models' shapes (vocabulary, context length, vision tower and image size), with a small
word-level tokenizer, in the hub cache layout that ``HF_HUB_OFFLINE=1`` resolves.
"""

from __future__ import annotations

import json
from pathlib import Path

REVISION = "0" * 40
LAYOUT = 3  # bumped whenever what build() writes changes: an older cache is rebuilt
MODELS = ("facebook/opt-125m", "llava-hf/llava-1.5-7b-hf", "Qwen/Qwen3-Next-80B-A3B-Instruct",
          "Qwen/Qwen3-0.6B")


def _tokenizer(out: Path, extra: list[str], vocab_size: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    words = [f"w{i}" for i in range(256)]
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    for i, tok in enumerate(extra):  # fixed ids at the real models' positions
        vocab[tok] = vocab_size - len(extra) + i if tok != "<image>" else 32000
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="<unk>")
    # One token each, never split by the pre-tokenizer ("<image>" must stay one id: vLLM
    # 0.33's multimodal processor finds the image placeholder by its id).
    fast.add_special_tokens({"additional_special_tokens": extra})
    fast.save_pretrained(out)


def _opt(out: Path) -> None:
    from transformers import OPTConfig

    OPTConfig(vocab_size=50272, hidden_size=768, num_hidden_layers=12, ffn_dim=3072,
              num_attention_heads=12, max_position_embeddings=2048, word_embed_proj_dim=768,
              bos_token_id=2, eos_token_id=2, pad_token_id=1, torch_dtype="float16",
              architectures=["OPTForCausalLM"]).save_pretrained(out)
    _tokenizer(out, [], 50272)


def _llava(out: Path) -> None:
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaProcessor,
    )

    vision = CLIPVisionConfig(hidden_size=1024, image_size=336, intermediate_size=4096,
                              num_attention_heads=16, num_hidden_layers=24, patch_size=14,
                              projection_dim=768)
    text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008,
                       num_hidden_layers=32, num_attention_heads=32,
                       max_position_embeddings=4096, torch_dtype="float16")
    LlavaConfig(vision_config=vision, text_config=text, image_token_index=32000,
                projector_hidden_act="gelu", vision_feature_layer=-2,
                vision_feature_select_strategy="default",
                torch_dtype="float16").save_pretrained(out)
    # No ``architectures``: inspecting vLLM's Llava class imports torchvision, which the CPU
    # environment leaves out (docs/design.md, "CPU install"); the tests read only its shapes.
    _tokenizer(out, ["<image>"], 32064)
    image = CLIPImageProcessor(size={"shortest_edge": 336},
                               crop_size={"height": 336, "width": 336})
    LlavaProcessor(image_processor=image, tokenizer=AutoTokenizer.from_pretrained(out),
                   patch_size=14, vision_feature_select_strategy="default",
                   chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}",
                   ).save_pretrained(out)


def _qwen3_next(out: Path) -> None:
    from transformers import Qwen3NextConfig

    # transformers' defaults are this model's shapes; its context length is 262,144.
    Qwen3NextConfig(max_position_embeddings=262144, rope_theta=10_000_000,
                    torch_dtype="bfloat16",
                    architectures=["Qwen3NextForCausalLM"]).save_pretrained(out)
    _tokenizer(out, [], 151936)


def _qwen3(out: Path) -> None:
    from transformers import Qwen3Config

    Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072,
                num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                max_position_embeddings=40960, rope_theta=1_000_000, tie_word_embeddings=True,
                torch_dtype="bfloat16", architectures=["Qwen3ForCausalLM"]).save_pretrained(out)
    _tokenizer(out, [], 151936)


def build(cache: Path) -> Path:
    """Write the hub cache under ``cache`` (once); returns the ``HF_HUB_CACHE`` directory."""
    hub = cache / "hub"
    done = hub / ".complete"
    if done.exists() and json.loads(done.read_text()) == [*MODELS, LAYOUT]:
        return hub
    for repo, write in zip(MODELS, (_opt, _llava, _qwen3_next, _qwen3), strict=True):
        root = hub / ("models--" + repo.replace("/", "--"))
        snap = root / "snapshots" / REVISION
        snap.mkdir(parents=True, exist_ok=True)
        write(snap)
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / "main").write_text(REVISION)
    done.write_text(json.dumps([*MODELS, LAYOUT]))
    return hub


if __name__ == "__main__":
    import sys

    print(build(Path(sys.argv[1])))
