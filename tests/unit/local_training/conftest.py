"""Fixtures for the local trainer: a tiny randomly initialised Llama and a byte-level BPE tokenizer with a ChatML
template, both built here from code (nothing is downloaded), saved as a model folder the trainer loads like any other."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

COLOURS = ["red", "blue", "green", "amber", "violet", "white", "black", "grey"]
THINGS = ["apple", "sky", "leaf", "lamp", "plum", "snow", "coal", "cloud", "ruby", "sea", "moss", "honey"]


def memorisable_examples(n: int = 12) -> list[dict[str, Any]]:
    """Small question -> one-word answer pairs a tiny model can learn by heart."""
    return [
        {
            "messages": [
                {"role": "system", "content": "Answer with one colour."},
                {"role": "user", "content": f"What colour is the {THINGS[i % len(THINGS)]}?"},
                {"role": "assistant", "content": COLOURS[(i * 5) % len(COLOURS)]},
            ]
        }
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def build_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [json.dumps(example) for example in memorisable_examples(len(THINGS))]
    corpus += ["user assistant system What colour is the Answer with one colour. hello world tool developer"] * 4
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )


def build_tiny_model_dir(path: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
        # Large enough that a frozen random head can express confident predictions (0.02 caps logits near 0.6).
        initializer_range=0.3,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    # Matrices of 32x64 run fastest on one thread; several threads mostly wait on each other on a busy machine.
    torch.set_num_threads(1)
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture
def jsonl(tmp_path: Path) -> Callable[[str, list[dict[str, Any]]], Path]:
    def make(name: str, rows: list[dict[str, Any]]) -> Path:
        return write_jsonl(tmp_path / name, rows)

    return make


@pytest.fixture
def memorisable() -> Callable[..., list[dict[str, Any]]]:
    return memorisable_examples
