"""The fast duplicate sketching of validation workers equals the slow path.

Workers sketch a parsed example without its canonical text (``Sketcher.add_example``): word hashes come from
``canonical_words_text`` (contents with their whitespace as it is) and the exact digest is replaced by a candidate key
that the finder confirms by reading the candidates again. These tests compare both paths on varied examples:
non-ASCII, tabs, newlines, empty and whitespace-only contents, decomposed accents, unusual whitespace, tool calls.
"""

from __future__ import annotations

import random
import unicodedata
from pathlib import Path

import numpy as np
import orjson
import pytest

from service.datasets.canonical import canonical_example_text, canonical_words_text
from service.datasets.dedupe import DuplicateFinder, DuplicateResult, MinHashParams, Sketcher, Sketches
from service.datasets.dedupe.minhash import exact_digest
from service.datasets.dedupe.words import word_hashes
from service.datasets.validation.scan import exact_digests

_PIECES = [
    "Hello",
    "hello",
    "HELLO!",
    "world",
    "wörld",
    "wo\u0308rld",  # decomposed: NFC gives "wörld"
    "\u0301accent first",  # a combining mark right after the separator
    "Straße",
    "страна",
    "СТРАНА",
    "東京は晴れ",
    "भूरी लोमड़ी",
    "한국어 문장",
    "مرحبا",
    "x_y z9",
    "café",
    "cafe\u0301",
    "!!!",
    "???",
    "-",
    "a-b",
    "a - b",
    "🙂",
    "<|endoftext|>",
    "\ufdd0",  # a noncharacter
]
_SPACES = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2000", "\u3000", "\u2028", "\x1c", " \t\n ", ""]


def _content(rng: random.Random) -> str:
    if rng.random() < 0.08:
        return rng.choice(["", " ", "\n\t ", "\u3000"])
    out = [rng.choice(_SPACES) if rng.random() < 0.3 else ""]
    for _ in range(rng.randint(1, 8)):
        out.append(rng.choice(_PIECES))
        out.append(rng.choice(_SPACES[:-1]))
    if rng.random() < 0.5:
        out.pop()
    return "".join(out)


def _message(rng: random.Random) -> object:
    role = rng.choice(["system", "user", "assistant", "assistant", "tool", "my role", "ROLE", " user"])
    draw = rng.random()
    if draw < 0.7:
        message: dict = {"role": role, "content": _content(rng)}
        if role == "assistant" and rng.random() < 0.3:
            message["weight"] = rng.choice([0, 1])
        if rng.random() < 0.1:  # keys beyond role, content and weight take the general rendering
            message[rng.choice(["name", "tool_call_id", "refusal"])] = rng.choice(["ann", " a\tb ", ""])
        return message
    if draw < 0.8:
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get  weather", "arguments": '{"city": "Paris\\t\\n", "n": 1}'},
                }
            ],
        }
    if draw < 0.9:
        return {
            "role": "user",
            "name": rng.choice(["ann", "a  b", ""]),
            "content": [{"type": "text", "text": _content(rng)}],
        }
    return rng.choice(["a bare string", 3, None, {"content": "no role"}])


def _example(rng: random.Random) -> dict:
    draw = rng.random()
    if draw < 0.85:
        obj: dict = {"messages": [_message(rng) for _ in range(rng.randint(1, 5))]}
        if rng.random() < 0.1:
            obj["tools"] = [{"type": "function", "function": {"name": rng.choice(["f", "g h", ""])}}]
        return obj
    if draw < 0.9:
        return {"prompt": _content(rng), "completion": _content(rng)}
    if draw < 0.95:
        return {
            "input": {"messages": [{"role": "user", "content": _content(rng)}]},
            "preferred_output": [{"role": "assistant", "content": _content(rng)}],
            "non_preferred_output": [{"role": "assistant", "content": _content(rng)}],
        }
    return {"messages": []} if rng.random() < 0.5 else {"other": _content(rng)}


def _respaced(rng: random.Random, obj: dict) -> dict:
    """The same canonical text: contents with their whitespace changed, keys in another order."""
    out = orjson.loads(orjson.dumps(obj))
    for message in out.get("messages", []) if isinstance(out.get("messages"), list) else []:
        if type(message) is dict and type(message.get("content")) is str:
            message["content"] = rng.choice(["", " ", "\n"]) + message["content"].replace(" ", " \t ") + "\n"
    return dict(reversed(list(out.items())))


def _upper(obj: dict) -> dict:
    """The same words once case-folded, but another canonical text (when the contents have any letter)."""
    out = orjson.loads(orjson.dumps(obj))
    for message in out.get("messages", []) if isinstance(out.get("messages"), list) else []:
        if type(message) is dict and type(message.get("content")) is str:
            message["content"] = message["content"].upper()
    return out


@pytest.fixture
def examples() -> list[dict]:
    rng = random.Random(20241121)
    rows = [_example(rng) for _ in range(600)]
    # Exact copies (respaced) and case-only variants, which share a candidate key but are not exact duplicates.
    for i in range(0, 600, 7):
        rows.append(_respaced(rng, rows[i]))
    for i in range(3, 600, 11):
        rows.append(_upper(rows[i]))
    rng.shuffle(rows)
    return rows


def test_words_text_has_the_words_of_the_canonical_text(examples: list[dict]) -> None:
    for obj in examples:
        canonical = canonical_example_text(obj, nfc=False)
        fast = canonical_words_text(obj)
        assert list(word_hashes([fast])[0]) == list(word_hashes([canonical])[0]), obj
        # Also after NFC, which the sketcher applies to the texts a quick check flags.
        nfc_fast = unicodedata.normalize("NFC", fast)
        nfc_canonical = unicodedata.normalize("NFC", canonical)
        assert list(word_hashes([nfc_fast])[0]) == list(word_hashes([nfc_canonical])[0]), obj


def _sketch(rows: list[dict], *, fast: bool, refs: list[int] | None = None) -> Sketches:
    params = MinHashParams.for_threshold(0.85)
    sketcher = Sketcher(params)
    out = []
    for i, obj in enumerate(rows):
        line = i + 1
        full = (
            sketcher.add_example(line, obj, refs[i] if refs else i)
            if fast
            else sketcher.add(line, canonical_example_text(obj, nfc=False))
        )
        if full:
            out.append(sketcher.take())
    out.append(sketcher.take())
    return Sketches.concatenate(out, params)


def test_fast_sketches_equal_the_slow_ones_and_keys_follow_the_canonical_text(examples: list[dict]) -> None:
    slow = _sketch(examples, fast=False)
    fast = _sketch(examples, fast=True)
    assert fast.refs is not None and slow.refs is None
    assert np.array_equal(fast.lines, slow.lines)
    assert np.array_equal(fast.sig, slow.sig)
    assert np.array_equal(fast.keys, slow.keys)
    assert np.array_equal(fast.has_words, slow.has_words)
    # Equal canonical texts (slow digests) always have equal candidate keys.
    by_digest: dict[tuple[int, int], tuple[int, int]] = {}
    for i in range(len(examples)):
        key = (int(fast.hi[i]), int(fast.lo[i]))
        assert by_digest.setdefault((int(slow.hi[i]), int(slow.lo[i])), key) == key
    # And the candidate keys do merge unequal texts (case variants, punctuation), which the finder must split again.
    assert len(set(zip(fast.hi.tolist(), fast.lo.tolist(), strict=True))) < len(by_digest)


def test_a_text_longer_than_a_word_chunk_is_cut_like_the_canonical_text() -> None:
    # Tabs become spaces in the canonical text, where the word hashing cuts a long text: the fast path must cut the
    # same text, not the raw one.
    # Few, long words, so that a word cut in two changes the signature.
    content = "\t".join(f"{i}" + "w" * 997 for i in range(300))
    rows = [{"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": "ok"}]}]
    slow, fast = _sketch(rows, fast=False), _sketch(rows, fast=True)
    assert np.array_equal(fast.sig, slow.sig) and np.array_equal(fast.keys, slow.keys)
    raw = Sketcher(MinHashParams.for_threshold(0.85))
    raw.add(1, canonical_words_text(rows[0]))
    assert not np.array_equal(raw.take().sig, slow.sig)  # what sketching the raw text would have given


def _write(path: Path, rows: list[dict], *, bom: bool = False, crlf: bool = False) -> list[int]:
    """Write JSONL (blank and invalid lines in between); returns the byte offset of each example's line."""
    offsets = []
    data = bytearray(b"\xef\xbb\xbf" if bom else b"")
    newline = b"\r\n" if crlf else b"\n"
    for i, row in enumerate(rows):
        if i % 50 == 10:
            data += b"{not json" + newline + newline
        offsets.append(len(data))
        data += orjson.dumps(row) + newline
    path.write_bytes(bytes(data))
    return offsets


@pytest.mark.parametrize(("bom", "crlf"), [(False, False), (True, True)])
def test_exact_digests_reread_the_canonical_text(tmp_path: Path, examples: list[dict], bom: bool, crlf: bool) -> None:
    path = tmp_path / "rows.jsonl"
    offsets = _write(path, examples, bom=bom, crlf=crlf)
    digests = exact_digests(str(path), np.array(offsets[::-1], dtype=np.int64))
    expected = [exact_digest(canonical_example_text(obj)) for obj in examples[::-1]]
    assert [d.tobytes() for d in digests] == expected


def _find(rows: list[dict], *, fast: bool, path: Path, memory_budget: int = 64 << 20) -> DuplicateResult:
    offsets = _write(path, rows)
    options = {"max_near_pairs": 100_000, "max_exact_groups": 100_000, "max_group_lines": 100_000}
    resolve = (lambda refs: exact_digests(str(path), refs)) if fast else None
    with DuplicateFinder(memory_budget=memory_budget, resolve=resolve, **options) as finder:  # type: ignore[arg-type]
        if fast:
            sketches = _sketch(rows, fast=True, refs=offsets)
            for lo in range(0, len(sketches), 97):  # batches as workers send them
                finder.add_sketches(
                    Sketches(*(getattr(sketches, f)[lo : lo + 97] for f in Sketches.__dataclass_fields__))
                )
        else:
            for line, row in enumerate(rows, start=1):
                finder.add(line, canonical_example_text(row))
        return finder.finish()


@pytest.mark.parametrize("memory_budget", [64 << 20, 16 << 10])  # in memory, and spilled to disk
def test_finder_with_candidate_keys_equals_the_finder_with_digests(
    tmp_path: Path, examples: list[dict], memory_budget: int
) -> None:
    slow = _find(examples, fast=False, path=tmp_path / "a.jsonl", memory_budget=memory_budget)
    fast = _find(examples, fast=True, path=tmp_path / "b.jsonl", memory_budget=memory_budget)
    assert slow.exact_groups_total > 20 and slow.near_pairs_total > 20
    assert fast.model_dump(exclude={"spilled_to_disk"}) == slow.model_dump(exclude={"spilled_to_disk"})


def test_candidate_keys_without_resolve_or_mixed_with_texts_are_refused(examples: list[dict]) -> None:
    sketches = _sketch(examples[:10], fast=True)
    with DuplicateFinder() as finder, pytest.raises(ValueError, match="resolve"):
        finder.add_sketches(sketches)
    with DuplicateFinder(resolve=lambda refs: np.zeros((len(refs), 2), np.uint64)) as finder:
        finder.add(1, "a text")
        with pytest.raises(ValueError, match="refs"):
            finder.add_sketches(sketches.shifted(1))
    sketcher = Sketcher(MinHashParams.for_threshold(0.85))
    sketcher.add(1, "text")
    with pytest.raises(ValueError, match="either"):
        sketcher.add_example(2, examples[0], 0)
