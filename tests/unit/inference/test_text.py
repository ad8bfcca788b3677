"""Incremental detokenisation never hands out half a character, and stop strings cut the text before them even when
they arrive split over several tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.inference.text import TextAssembler


@pytest.fixture
def tokenizer(tiny_base: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_base))


def feed(tokenizer, text: str, stop: list[str]) -> tuple[list[str], TextAssembler]:  # type: ignore[no-untyped-def]
    assembler = TextAssembler(tokenizer, stop)
    pieces = []
    for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
        assembler.add(token)
        pieces.append(assembler.take())
        if assembler.stopped:
            break
    assembler.finish()
    pieces.append(assembler.take(final=True))
    return pieces, assembler


def test_multi_byte_characters_are_released_whole(tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = "naïve café — 雪 and 🍎 apple"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text.split())  # the tiny vocabulary splits these characters into byte tokens
    pieces, assembler = feed(tokenizer, text, [])
    assert "".join(pieces) == text == assembler.text
    assert not any("\ufffd" in piece for piece in pieces)


def test_stop_strings_split_over_tokens_are_never_shown(tokenizer) -> None:  # type: ignore[no-untyped-def]
    pieces, assembler = feed(tokenizer, "red sky at night, blue at noon", ["at noon", "sky at"])
    assert "".join(pieces) == "red "
    assert assembler.stopped
    pieces, assembler = feed(tokenizer, "a lamp and a leaf", ["leaves"])
    assert "".join(pieces) == "a lamp and a leaf"  # "lea" was held back, then released at the end
    assert not assembler.stopped
