"""The native token counter (service/_tokcount.c) against tiktoken: same pieces, same counts, and a fallback where it
cannot vouch for the answer."""

from __future__ import annotations

import random
import shutil
import unicodedata

import pytest
import regex

from service import tokens
from service.tokens import get_encoding, token_classes, token_counter

_tokcount = pytest.importorskip("service._tokcount", reason="the C extension is not built (no C compiler?)")

ENCODINGS = ["o200k_base", "cl100k_base"]

# Pieces that sit on every boundary the two patterns distinguish: letter classes (Lu, Ll, Lt, Lm, Lo, marks), numbers
# (Nd, Nl, No), the contractions and their case folds (U+017F folds to s), the prefix character before a word,
# punctuation runs with trailing line breaks and slashes, and every kind of whitespace (U+001C..U+001F are not \s but
# str.isspace() says they are).
ALPHABET = [
    *" \t\n\r\x0b\x0c\x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000\x1c\x1f",
    *"'sdmtlvreSDMTLVRE\u017f",
    "'s",
    "'S",
    "'\u017f",
    "'ll",
    "'LL",
    "'Re",
    "'ve",
    "''",
    "  ",
    "\n\n",
    " \n",
    "\r\n",
    "\n ",
    "123",
    "4567",
    "\u2167",
    "\u00bd",
    "\u00b2",
    "\u0663",
    "word",
    "Word",
    "WORD",
    "wORD",
    "é",
    "ß",
    "中文",
    "日本語",
    "한국어",
    "\u02b0",
    "\u01c5",
    "\u1f88",
    "\u0640",
    "\u0301",
    "\u0903",
    "\u20dd",
    "\u200d",
    "\u200b",
    "\ue000",
    "🙂",
    "👍🏽",
    "<|endoftext|>",
    "!?",
    "...",
    "//",
    "/",
    "{}",
    "::",
    "-",
    "_",
    "$",
    "\x00",
    "\x7f",
    "ǅa",
    "Aʰa",
    "ʰA",
]


def _fuzz(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(n))


@pytest.mark.parametrize("name", ENCODINGS)
def test_native_counts_equal_tiktoken_on_fuzzed_text(name: str) -> None:
    counter = token_counter(name, backend="native")  # type: ignore[arg-type]
    native = counter.__self__.native_count  # type: ignore[attr-defined]
    encode = get_encoding(name).encode_ordinary  # type: ignore[arg-type]
    rng = random.Random(20261122)
    for _ in range(20000):
        text = _fuzz(rng, rng.randint(0, 30))
        expected = len(encode(text))
        assert native(text) == expected, repr(text)
    long_text = _fuzz(rng, 50000)
    assert native(long_text) == len(encode(long_text))


@pytest.mark.parametrize("name", ENCODINGS)
def test_native_pieces_equal_the_reference_pattern(name: str) -> None:
    """The hand-written matchers split text exactly as the encoding's regular expression does."""
    pattern = regex.compile(get_encoding(name)._pat_str)  # type: ignore[arg-type]
    counter = token_counter(name, backend="native")  # type: ignore[arg-type]
    pieces = counter.__self__.pieces  # type: ignore[attr-defined]
    rng = random.Random(7)
    for _ in range(20000):
        text = _fuzz(rng, rng.randint(0, 30))
        assert pieces(text) == pattern.findall(text), repr(text)


@pytest.mark.parametrize("name", ENCODINGS)
def test_every_known_code_point_is_classified_as_the_reference_does(name: str) -> None:
    """Each code point the class table knows, in contexts that exercise each class bit, counts as tiktoken counts it.

    The table comes from Python's Unicode database, tiktoken's pattern from its regex engine's; a character the two
    classify differently would show here (private-use planes are sampled)."""
    classes = token_classes()
    unknown = _tokcount.CLASS_UNKNOWN
    counter = token_counter(name, backend="native")  # type: ignore[arg-type]
    native = counter.__self__.native_count  # type: ignore[attr-defined]
    encode = get_encoding(name).encode_ordinary  # type: ignore[arg-type]
    code_points = [
        cp
        for cp in range(0x110000)
        if not classes[cp] & unknown and (unicodedata.category(chr(cp)) != "Co" or cp % 4099 == 0)
    ]
    batch: list[str] = []
    for i, cp in enumerate(code_points):
        c = chr(cp)
        batch.append(f"{c}a {c}A{c}1{c}'s {c}{c}\n{c} x{c}ab{c}")
        if len(batch) == 64 or i == len(code_points) - 1:
            text = " | ".join(batch)
            if native(text) != len(encode(text)):
                bad = [probe for probe in batch if native(probe) != len(encode(probe))]
                pytest.fail(f"{name}: {[(hex(ord(p[0])), unicodedata.category(p[0])) for p in bad]}")
            batch = []


def test_text_the_counter_cannot_vouch_for_goes_to_the_reference() -> None:
    counter = token_counter("o200k_base", backend="native")
    native = counter.__self__.native_count  # type: ignore[attr-defined]
    encode = get_encoding("o200k_base").encode_ordinary
    unassigned = "a\u0378b"  # unassigned in Unicode 14 and 16
    long_piece = "x" * 1000  # one piece longer than the quadratic merge takes
    long_spaces = " " * 5000
    for text in (unassigned, long_piece, long_spaces):
        assert native(text) is None
        assert counter(text) == len(encode(text))
    before = counter.__self__.fallbacks  # type: ignore[attr-defined]
    counter(unassigned)
    assert counter.__self__.fallbacks == before + 1  # type: ignore[attr-defined]


def test_lone_surrogates_are_counted_as_tiktoken_counts_them() -> None:
    text = "a\ud800b"
    assert token_counter("cl100k_base")(text) == len(get_encoding("cl100k_base").encode_ordinary(text))


def test_counter_rejects_bad_tables() -> None:
    fallback = len
    with pytest.raises(ValueError, match="0x110000"):
        _tokcount.Counter(0, [b"a"], b"\x00" * 10, fallback)
    with pytest.raises(ValueError, match="appears twice"):
        _tokcount.Counter(0, [b"ab", b"ab"], token_classes(), fallback)
    with pytest.raises(ValueError, match="kind"):
        _tokcount.Counter(7, [b"a"], token_classes(), fallback)
    with pytest.raises(TypeError):
        _tokcount.Counter(0, [b"a"], token_classes(), fallback).count(b"bytes")  # type: ignore[arg-type]


def test_auto_prefers_the_native_counter_when_it_is_built() -> None:
    assert token_counter("o200k_base").__self__.__class__ is _tokcount.Counter  # type: ignore[attr-defined]


def test_the_extension_is_built_where_a_compiler_is_available() -> None:
    """CI machines have a C compiler: the extension must not silently go missing there (setup.py marks it
    optional so that installs without a compiler still work)."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine")
    assert tokens._native_counter("cl100k_base") is not None


@pytest.fixture
def fresh_native_counters():
    tokens._native_counter.cache_clear()
    yield
    tokens._native_counter.cache_clear()


def test_without_bpe_openai_the_fallback_is_tiktoken(monkeypatch: pytest.MonkeyPatch, fresh_native_counters) -> None:
    monkeypatch.setattr(tokens, "_rust_counter", lambda name: None)
    counter = token_counter("o200k_base", backend="native")
    text = "a\u0378b " * 3
    assert counter(text) == len(get_encoding("o200k_base").encode_ordinary(text))


def test_without_the_extension_auto_uses_bpe_openai(monkeypatch: pytest.MonkeyPatch, fresh_native_counters) -> None:
    import sys

    import service

    monkeypatch.delattr(service, "_tokcount", raising=False)
    monkeypatch.setitem(sys.modules, "service._tokcount", None)  # makes the import fail
    assert tokens._native_counter("o200k_base") is None
    counter = token_counter("o200k_base")
    assert counter is tokens._rust_counter("o200k_base")
    with pytest.raises(tokens.TokenizerUnavailable, match="native"):
        token_counter("o200k_base", backend="native")
