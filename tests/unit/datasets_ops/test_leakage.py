from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from dsops_helpers import change_one_word, chat, sentence, write_jsonl

from service.datasets.dedupe import build_signature_index, find_leakage, leakage


@pytest.fixture
def train_test(tmp_path: Path, rng: random.Random) -> tuple[Path, Path, set[int], set[int]]:
    """300 training examples; a 60-line test set with 8 exact copies (reformatted), 6 near copies, the rest new."""
    train_rows = [chat(sentence(rng, 60), sentence(rng, 120)) for _ in range(300)]
    test_rows: list[object] = []
    exact_lines: set[int] = set()
    near_lines: set[int] = set()
    for i in range(60):
        source = train_rows[i * 5]
        if i % 7 == 0:
            # Same content, different key order and spacing: still an exact leak after canonicalisation.
            messages = [
                {"content": "  " + m["content"].replace(" ", "   ") + "\n", "role": m["role"]}
                for m in source["messages"]
            ]
            test_rows.append({"messages": messages})
            exact_lines.add(len(test_rows))
        elif i % 7 == 1:
            user, assistant = (m["content"] for m in source["messages"])
            test_rows.append(chat(user, change_one_word(assistant)))
            near_lines.add(len(test_rows))
        else:
            test_rows.append(chat(sentence(rng, 60), sentence(rng, 120)))
    train = write_jsonl(tmp_path / "train.jsonl", train_rows)
    test = write_jsonl(tmp_path / "test.jsonl", test_rows)
    return train, test, exact_lines, near_lines


def build(path: Path, tmp_path: Path, **options: object) -> Path:
    out = tmp_path / f"{path.stem}.sig"
    build_signature_index(path, out, **options)  # type: ignore[arg-type]
    return out


def test_exact_and_near_leakage(train_test: tuple[Path, Path, set[int], set[int]], tmp_path: Path) -> None:
    train, test, exact_lines, near_lines = train_test
    result = find_leakage(build(train, tmp_path), build(test, tmp_path))
    assert result.train_examples == 300
    assert result.test_examples == 60
    assert result.exact_test_lines == len(exact_lines)
    assert {test_line for _, test_line in result.exact_pairs} == exact_lines
    # The training copy of test example i is training example 5 * i (0-based), i.e. line 5 * (i) + 1.
    assert all(train_line == 5 * (test_line - 1) + 1 for train_line, test_line in result.exact_pairs)
    assert result.near_test_lines == len(near_lines)
    assert {test_line for _, test_line, _ in result.near_pairs} == near_lines
    assert all(train_line == 5 * (test_line - 1) + 1 for train_line, test_line, _ in result.near_pairs)
    assert all(0.85 <= score <= 1.0 for _, _, score in result.near_pairs)
    assert result.leaked_test_lines == sorted(exact_lines | near_lines)
    assert result.leaked_fraction == pytest.approx(len(exact_lines | near_lines) / 60)
    assert result.complete


def test_tiny_memory_budget_needs_several_passes_and_agrees(
    train_test: tuple[Path, Path, set[int], set[int]], tmp_path: Path
) -> None:
    train, test, _, _ = train_test
    train_sig, test_sig = build(train, tmp_path), build(test, tmp_path)
    assert find_leakage(train_sig, test_sig, memory_budget=2048) == find_leakage(train_sig, test_sig)


def test_caps_on_listed_lines(train_test: tuple[Path, Path, set[int], set[int]], tmp_path: Path) -> None:
    train, test, exact_lines, near_lines = train_test
    result = find_leakage(build(train, tmp_path), build(test, tmp_path), max_pairs=2, max_lines=3)
    assert len(result.exact_pairs) == 2 and len(result.near_pairs) == 2
    assert result.leaked_test_lines == sorted(exact_lines | near_lines)[:3]
    assert result.exact_test_lines == len(exact_lines)


def test_disjoint_datasets_have_no_leakage(tmp_path: Path, rng: random.Random) -> None:
    train = write_jsonl(tmp_path / "a.jsonl", [chat(sentence(rng, 20), sentence(rng, 20)) for _ in range(100)])
    test = write_jsonl(tmp_path / "b.jsonl", [chat(sentence(rng, 20), sentence(rng, 20)) for _ in range(50)])
    result = find_leakage(build(train, tmp_path), build(test, tmp_path))
    assert (result.exact_test_lines, result.near_test_lines, result.leaked_test_lines) == (0, 0, [])


def test_signature_file_header_and_skipped_lines(tmp_path: Path, rng: random.Random) -> None:
    path = tmp_path / "mixed.jsonl"
    good = json.dumps(chat(sentence(rng, 10), sentence(rng, 10)))
    path.write_text(f"{good}\n\nnot json\n[1, 2]\n{good}\n")
    sig = build(path, tmp_path)
    header = json.loads(sig.read_bytes()[8:4096].decode())
    assert header["examples"] == 2
    assert header["skipped_lines"] == 3
    result = find_leakage(sig, sig)
    # A file against itself: every line leaks, and line numbers are the file's physical lines.
    assert result.leaked_test_lines == [1, 5]
    assert result.exact_pairs == [(1, 1), (1, 5)]


def test_incompatible_or_corrupt_signature_files(tmp_path: Path, rng: random.Random) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [chat(sentence(rng, 10), sentence(rng, 10)) for _ in range(5)])
    default = tmp_path / "default.sig"
    other = tmp_path / "other.sig"
    build_signature_index(path, default)
    build_signature_index(path, other, near_threshold=0.6)
    with pytest.raises(ValueError, match="different parameters"):
        find_leakage(default, other)
    truncated = tmp_path / "truncated.sig"
    truncated.write_bytes(default.read_bytes()[:-10])
    with pytest.raises(ValueError, match="expected"):
        find_leakage(default, truncated)
    garbage = tmp_path / "garbage.sig"
    garbage.write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a signature file"):
        find_leakage(garbage, default)
    with pytest.raises(ValueError, match="threshold"):
        find_leakage(default, default, threshold=0)


def test_empty_dataset(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    sig = build(empty, tmp_path)
    result = find_leakage(sig, sig)
    assert (result.train_examples, result.test_examples, result.leaked_fraction) == (0, 0, 0.0)


def test_small_verification_slices_agree(
    train_test: tuple[Path, Path, set[int], set[int]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, test, _, _ = train_test
    train_sig, test_sig = build(train, tmp_path), build(test, tmp_path)
    expected = find_leakage(train_sig, test_sig)
    monkeypatch.setattr(leakage, "VERIFY_BATCH_PAIRS", 3)
    assert find_leakage(train_sig, test_sig) == expected


def test_popular_band_keys_are_capped_and_flagged(tmp_path: Path, rng: random.Random) -> None:
    text = sentence(rng, 40)
    # Case variants: different exact digests, identical signatures, so all share every band key.
    train = write_jsonl(
        tmp_path / "train.jsonl", [chat("Q", text.upper() if i % 2 else text + "!" * i) for i in range(6)]
    )
    test = write_jsonl(tmp_path / "test.jsonl", [chat("q", text)])
    train_sig, test_sig = build(train, tmp_path), build(test, tmp_path)
    full = find_leakage(train_sig, test_sig)
    assert full.complete and full.near_pairs == [(1, 1, 1.0)]
    capped = find_leakage(train_sig, test_sig, max_bucket=2)
    assert not capped.complete
    assert capped.near_test_lines == 1
