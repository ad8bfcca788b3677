"""Offline tokenizers: official hashes, known token ids, round trips, model resolution, fast counter == tiktoken."""

from __future__ import annotations

import gzip
import hashlib
import random

import pytest

from service import tokens
from service.tokens import (
    ENCODING_SHA256,
    base_model_name,
    count_tokens,
    encoding_for_model,
    find_special_token_text,
    get_encoding,
    load_shipped_ranks,
    resolve_model_encoding,
    token_counter,
)

MULTILINGUAL = [
    "The quick brown fox jumps over the lazy dog.",
    "Größere Verspätungen sind möglich; die Straßenbahn fährt nur bis zum Hauptbahnhof.",
    "敏捷的棕色狐狸跳过了懒狗，委员会正在审查季度预算报告。",
    "素早い茶色の狐が怠け者の犬を飛び越える。",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "يقفز الثعلب البني السريع فوق الكلب الكسول",
    "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है।",
    "빠른 갈색 여우가 게으른 개를 뛰어넘습니다.",
    "Emoji 👍🏽 and ZWJ 👩‍👩‍👧 sequences, combining e\u0301, tabs\tand\r\nCRLF.",
    "def f(x):\n    return x ** 2  # comment\n\n\n    \n",
    "   leading and trailing spaces   ",
]


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_shipped_rank_files_have_the_official_hashes(name: str) -> None:
    path = tokens._shipped_rank_file(name)
    assert path is not None, "bpe-openai's rank files must be installed"
    assert hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest() == ENCODING_SHA256[name]
    ranks = load_shipped_ranks(name)
    assert ranks is not None
    assert len(ranks) == {"o200k_base": 199998, "cl100k_base": 100256}[name]


def test_tampered_rank_file_is_refused(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "o200k_base.tiktoken.gz"
    fake.write_bytes(gzip.compress(b"IQ== 0\n"))
    monkeypatch.setattr(tokens, "_shipped_rank_file", lambda name: fake)
    with pytest.raises(tokens.TokenizerUnavailable, match="sha256"):
        load_shipped_ranks("o200k_base")


def test_missing_rank_files_and_no_cache_give_a_clear_error(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_shipped_rank_file", lambda name: None)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("tiktoken.load.read_file", lambda blobpath: (_ for _ in ()).throw(OSError("offline")))
    tokens._get_encoding.cache_clear()
    try:
        with pytest.raises(tokens.TokenizerUnavailable, match="TIKTOKEN_CACHE_DIR"):
            get_encoding("cl100k_base")
    finally:
        tokens._get_encoding.cache_clear()


def test_known_token_ids() -> None:
    assert get_encoding("o200k_base").encode("hello world") == [24912, 2375]
    assert get_encoding("cl100k_base").encode("hello world") == [15339, 1917]
    assert count_tokens("hello world", "o200k_base") == 2
    # Special tokens keep their official ids.
    assert get_encoding("o200k_base").encode("<|endoftext|>", allowed_special="all") == [199999]
    assert get_encoding("cl100k_base").encode("<|endoftext|>", allowed_special="all") == [100257]


def test_encodings_are_cached() -> None:
    assert get_encoding("o200k_base") is get_encoding("o200k_base")


def test_unsupported_encoding_is_rejected() -> None:
    with pytest.raises(ValueError, match="unsupported encoding"):
        get_encoding("p50k_base")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
@pytest.mark.parametrize("text", MULTILINGUAL)
def test_round_trip_on_real_text(name: str, text: str) -> None:
    enc = get_encoding(name)  # type: ignore[arg-type]
    ids = enc.encode_ordinary(text)
    assert enc.decode(ids) == text
    assert token_counter(name)(text) == len(ids)  # type: ignore[arg-type]


def test_o200k_is_more_compact_than_cl100k_on_non_latin_text() -> None:
    text = "".join(MULTILINGUAL[2:8])
    assert count_tokens(text, "o200k_base") < count_tokens(text, "cl100k_base")


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_fast_counter_matches_tiktoken_on_fuzzed_text(name: str) -> None:
    """The Rust counter must reproduce tiktoken exactly, including whitespace runs, contractions, digits, marks."""
    rng = random.Random(1234)
    alphabet = [
        *" \t\n\r\u00a0\u3000'sdmtlvre",
        "'S",
        "'ll",
        "  ",
        "\n\n",
        " \n",
        "\r\n",
        "123",
        "4567",
        "word",
        "Word",
        "WORD",
        "é",
        "ß",
        "中文",
        "日本語",
        "한국어",
        "ـ",
        "\u0301",
        "\u200d",
        "🙂",
        "👍🏽",
        "<|endoftext|>",
        "!?",
        "...",
        "//",
        "{}",
        "::",
        "ǅ",
        "ʰ",
        "ᾈ",
    ]
    counter = token_counter(name, backend="auto")  # type: ignore[arg-type]
    encode = get_encoding(name).encode_ordinary  # type: ignore[arg-type]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert counter(text) == len(encode(text)), repr(text)
    long_text = "".join(rng.choice(alphabet) for _ in range(20000))
    assert counter(long_text) == len(encode(long_text))


def test_tiktoken_backend_is_available() -> None:
    assert token_counter("o200k_base", backend="tiktoken")("hello world") == 2


@pytest.mark.parametrize(
    ("model", "base", "encoding", "assumed"),
    [
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini-2025-04-14", "o200k_base", False),
        ("ft:gpt-4.1-mini-2025-04-14:acme::AbC123", "gpt-4.1-mini-2025-04-14", "o200k_base", False),
        (
            "ft:gpt-4o-mini-2024-07-18:my-org:custom-suffix:96olL566:ckpt-step-2000",
            "gpt-4o-mini-2024-07-18",
            "o200k_base",
            False,
        ),
        ("ft:gpt-3.5-turbo-0125:acme::xyz", "gpt-3.5-turbo-0125", "cl100k_base", False),
        ("ft:davinci-002:acme::xyz", "davinci-002", "cl100k_base", False),
        ("gpt-4-0613", "gpt-4-0613", "cl100k_base", False),
        ("gpt-4o", "gpt-4o", "o200k_base", False),
        ("o4-mini-2025-04-16", "o4-mini-2025-04-16", "o200k_base", False),
        ("gpt-5-mini", "gpt-5-mini", "o200k_base", False),
        ("curie:ft-acme-2023-01-01-00-00-00", "curie", "o200k_base", True),
        ("gpt-4o-mini-2024-07-18.ft-0123456789abcdef:ckpt-step-10", "gpt-4o-mini-2024-07-18", "o200k_base", False),
        ("my-local-llama", "my-local-llama", "o200k_base", True),
        ("cl100k_base", "cl100k_base", "cl100k_base", False),
    ],
)
def test_model_resolution(model: str, base: str, encoding: str, assumed: bool) -> None:
    resolved = resolve_model_encoding(model)
    assert (resolved.base_model, resolved.encoding, resolved.assumed) == (base, encoding, assumed)
    assert encoding_for_model(model) == encoding
    assert base_model_name(model) == base


def test_bad_model_names() -> None:
    with pytest.raises(ValueError, match="empty"):
        resolve_model_encoding("  ")
    with pytest.raises(ValueError, match="no base model"):
        base_model_name("ft::org::id")


def test_special_token_text_detection() -> None:
    assert find_special_token_text("fine text") is None
    assert find_special_token_text("a <|fim_suffix|> b") == "<|fim_suffix|>"
    assert find_special_token_text("<|not_special|>") is None
