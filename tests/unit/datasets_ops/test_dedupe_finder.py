from __future__ import annotations

import random
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from dsops_helpers import change_one_word, sentence

from service.datasets.dedupe import DuplicateFinder, DuplicateResult, MinHashParams, lsh_bands, minhash, word_tables
from service.datasets.dedupe import words as dedupe_words
from service.datasets.dedupe.word_tables import _WORD_RE
from service.datasets.dedupe.words import _word_hashes


def run(texts: list[str], **options: object) -> DuplicateResult:
    with DuplicateFinder(**options) as finder:  # type: ignore[arg-type]
        for line, text in enumerate(texts, start=1):
            finder.add(line, text)
        return finder.finish()


@pytest.fixture
def corpus(rng: random.Random) -> tuple[list[str], set[tuple[int, int]], list[list[int]]]:
    """400 unrelated 80-word texts, with exact copies and one-word edits (true Jaccard ~0.93) sprinkled in."""
    texts: list[str] = []
    near: set[tuple[int, int]] = set()
    exact: list[list[int]] = []
    for i in range(400):
        texts.append(sentence(rng, 80))
        origin = len(texts)
        if i % 25 == 0:
            texts.append(texts[origin - 1])
            texts.append(texts[origin - 1])
            exact.append([origin, origin + 1, origin + 2])
        if i % 9 == 0:
            texts.append(change_one_word(texts[origin - 1]))
            near.add((origin, len(texts)))
    return texts, near, exact


def test_exact_groups_and_near_pairs(corpus: tuple[list[str], set[tuple[int, int]], list[list[int]]]) -> None:
    texts, near, exact = corpus
    result = run(texts)
    assert result.examples == len(texts)
    assert result.exact == exact
    assert result.exact_sizes == [3] * len(exact)
    assert result.exact_groups_total == len(exact)
    assert result.exact_duplicate_lines == 2 * len(exact)
    found = {(a, b) for a, b, _ in result.near}
    # The edits sit 3 standard deviations above the threshold: recall must be near-complete, precision total.
    assert found <= near
    assert len(found) >= 0.95 * len(near)
    assert result.near_pairs_total == len(found)
    assert result.near_duplicate_lines == len({b for _, b in found})
    assert all(0.85 <= j <= 1.0 for _, _, j in result.near)
    assert result.near == sorted(result.near)
    assert result.near_complete
    assert not result.spilled_to_disk


def test_exact_copies_are_not_reported_as_near_pairs(rng: random.Random) -> None:
    base = sentence(rng, 40)
    result = run([base, base, change_one_word(base, 5), base.upper()])
    assert result.exact == [[1, 2]]
    pairs = {(a, b) for a, b, _ in result.near}
    # Line 2 is a copy of line 1: its pairs are implied by line 1's and not repeated.
    assert all(2 not in pair for pair in pairs)
    # Case differences are exact-distinct but near-identical (the near comparison is case-folded).
    assert (1, 4, 1.0) in result.near


def test_dissimilar_texts_are_not_near_duplicates(rng: random.Random) -> None:
    texts = [sentence(rng, 30) for _ in range(300)]
    # Half the words shared: Jaccard far below 0.85.
    texts.append(" ".join(texts[0].split()[:15] + texts[1].split()[15:]))
    result = run(texts)
    assert result.near == []
    assert result.near_pairs_total == 0
    assert result.exact == []


def test_lower_threshold_finds_looser_pairs(rng: random.Random) -> None:
    base = sentence(rng, 40)
    edited = " ".join([*base.split()[:30], *(f"x{i}" for i in range(10))])
    assert run([base, edited]).near == []
    loose = run([base, edited], near_threshold=0.5)
    assert [(a, b) for a, b, _ in loose.near] == [(1, 2)]
    assert 0.5 <= loose.near[0][2] < 0.85


def test_spill_to_disk_gives_the_same_result(
    corpus: tuple[list[str], set[tuple[int, int]], list[list[int]]], tmp_path: Path
) -> None:
    texts, _, _ = corpus
    in_memory = run(texts)
    spilled = run(texts, memory_budget=4096, workdir=tmp_path)
    assert spilled.spilled_to_disk
    assert spilled.model_dump(exclude={"spilled_to_disk"}) == in_memory.model_dump(exclude={"spilled_to_disk"})
    # close() removed the private spill folder.
    assert list(tmp_path.iterdir()) == []


def test_grouping_in_several_passes_without_spilling(
    corpus: tuple[list[str], set[tuple[int, int]], list[list[int]]],
) -> None:
    texts, _, _ = corpus
    # Rows fit the stores, but the band records exceed the 1/16-budget slice grouped at once.
    several_passes = run(texts, memory_budget=320_000)
    assert not several_passes.spilled_to_disk
    assert several_passes == run(texts)


def test_spill_files_are_removed_on_close(tmp_path: Path, rng: random.Random) -> None:
    finder = DuplicateFinder(memory_budget=1024, workdir=tmp_path)
    # More than one internal batch (4096 examples), so rows reach the stores while adding.
    for line in range(1, 4200):
        finder.add(line, sentence(rng, 5))
    assert any(tmp_path.iterdir())
    finder.close()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError):
        finder.add(500, "more")


def test_output_is_deterministic(corpus: tuple[list[str], set[tuple[int, int]], list[list[int]]]) -> None:
    texts, _, _ = corpus
    assert run(texts).model_dump() == run(texts).model_dump()


def test_caps_keep_the_first_items_and_count_all(rng: random.Random) -> None:
    texts = []
    for _ in range(6):
        # 80 words: a one-word edit sits well above the threshold (at 60 words, J ~0.90, each pair has a ~1.5%
        # chance of sharing no LSH band, so whether all six are found depended on the hash constants).
        text = sentence(rng, 80)
        texts += [text, text, text, change_one_word(text)]
    result = run(texts, max_near_pairs=2, max_exact_groups=3, max_group_lines=2)
    assert result.exact_groups_total == 6
    assert result.exact == [[1, 2], [5, 6], [9, 10]]
    assert result.exact_sizes == [3, 3, 3]
    assert result.exact_duplicate_lines == 12
    assert result.near_pairs_total == 6
    assert [(a, b) for a, b, _ in result.near] == [(1, 4), (5, 8)]


def test_huge_buckets_are_windowed_and_flagged(rng: random.Random) -> None:
    base = sentence(rng, 60)
    texts = [change_one_word(base, i) for i in range(20)]
    full = run(texts)
    windowed = run(texts, max_bucket=4)
    assert full.near_complete and not windowed.near_complete
    assert 0 < windowed.near_pairs_total <= full.near_pairs_total


def test_texts_without_words(rng: random.Random) -> None:
    result = run(["", "!!!", "", sentence(rng, 10), "..."])
    assert result.exact == [[1, 3]]
    assert result.near == []


def test_short_texts_and_cjk() -> None:
    cjk = "".join(chr(0x4E00 + 7 * i) for i in range(80))
    edited = cjk[:40] + "\u3042" + cjk[41:]
    result = run(["hi", "hi!", "Hi", cjk, edited, cjk[:40], "totally different words here"])
    # "hi", "hi!" and "Hi" share their only shingle. CJK has no spaces but is tokenised per character, so one
    # changed character leaves the texts close while half the text is not.
    assert {(a, b) for a, b, _ in result.near} == {(1, 2), (1, 3), (2, 3), (4, 5)}


def test_unicode_and_surrogates_do_not_break_hashing(rng: random.Random) -> None:
    # A lone surrogate (valid in JSON escapes) and accented words take the non-ASCII tokeniser.
    text = "caf\u00e9 \ud800 na\u00efve " + sentence(rng, 60) + " r\u00e9sum\u00e9"
    result = run([text, change_one_word(text, 20), "CAF\u00c9 \ud800 NA\u00cfVE"])
    assert [(a, b) for a, b, _ in result.near] == [(1, 2)]


def test_invalid_calls() -> None:
    with pytest.raises(ValueError, match="near_threshold"):
        DuplicateFinder(near_threshold=0)
    with pytest.raises(ValueError, match="near_threshold"):
        DuplicateFinder(near_threshold=1.5)
    with pytest.raises(ValueError, match="memory_budget"):
        DuplicateFinder(memory_budget=10)
    with DuplicateFinder() as finder:
        finder.add(3, "a")
        with pytest.raises(ValueError, match="increasing"):
            finder.add(3, "b")
        with pytest.raises(ValueError, match="positive"):
            finder.add(0, "b")
        with pytest.raises(TypeError):
            finder.add(4, b"bytes")  # type: ignore[arg-type]
        first = finder.finish()
        assert finder.finish() is first
        with pytest.raises(RuntimeError):
            finder.add(10, "late")


def test_lsh_layout_favours_recall() -> None:
    bands, rows = lsh_bands(0.85, 128)
    assert bands * rows <= 128
    # Probability that a pair exactly at the threshold becomes a candidate.
    assert 1 - (1 - 0.85**rows) ** bands > 0.8
    # ... while clearly dissimilar pairs rarely do.
    assert 1 - (1 - 0.5**rows) ** bands < 0.02
    params = MinHashParams.for_threshold(0.85)
    assert (params.bands, params.rows) == (bands, rows)


def test_vectorised_tokeniser_matches_the_regular_expression() -> None:
    text = "Hello, World_1! it's a-b (c) 42x\ttabs\nnew-lines ~end~ CAF\u00c9 \u4e00\u4e01abc\u30fb \ud800 \u0399\u03a3"
    words = _WORD_RE.findall(text.casefold())
    # The batch tokeniser finds the same words as the expression: hashing each of them alone gives the same hashes.
    expected = [int(_word_hashes(word)[0]) for word in words]
    assert [int(h) for h in _word_hashes(text)] == expected
    assert len(expected) == len(words) == 18
    # Case-folded: the same words in upper case hash the same.
    assert list(_word_hashes(text.upper())) == list(_word_hashes(text.lower()))
    # Multi-character folds keep the character (a slightly lower similarity, never an error).
    assert list(_word_hashes("STRASSE stra\u00dfe")) != list(_word_hashes("strasse strasse"))
    # Every code point, alone between spaces, is a word exactly when the expression finds one there.
    tables = word_tables._tables()
    singles = [c for c in map(chr, range(0x110000)) if len(c.casefold()) == 1]
    for start in range(0, len(singles), 50_000):
        chunk = " ".join(singles[start : start + 50_000])
        _, first, _ = dedupe_words._chunk_words(chunk, tables)
        assert first.tolist() == [m.start() for m in _WORD_RE.finditer(chunk.casefold())]


def test_nfc_table_flags_every_text_that_is_not_nfc() -> None:
    # The table is built below U+30000: nothing above has a canonical decomposition or a combining class.
    for cp in range(0x30000, 0x110000):
        assert not unicodedata.combining(chr(cp)) and not unicodedata.decomposition(chr(cp))
    # Every character after each kind of predecessor (none, a plain letter, a Hangul lead, a syllable, a letter with
    # an accent, a combining mark): the texts that NFC changes are exactly those normalised.
    for before in ("", "a", "\u1100", "\uac00", "\u00e9", "a\u0316", "\u0928", "\u0bc6"):
        texts = [before + chr(cp) for cp in range(0x30000)]
        assert dedupe_words._nfc(texts) == [unicodedata.normalize("NFC", t) for t in texts], repr(before)
    texts = ["caf\u00e9", "cafe\u0301", "\u1100\u1161", "plain", "\u212b", "a\u0301\u0316", "\u091c\u093c"]
    normalised = dedupe_words._nfc(texts)
    assert normalised == [unicodedata.normalize("NFC", t) for t in texts]
    # ज + nukta is NFC as it is (its composite is excluded): not passed to normalize, the very same object comes back.
    assert normalised[-1] is texts[-1]


def test_signatures_do_not_depend_on_slicing(
    corpus: tuple[list[str], set[tuple[int, int]], list[list[int]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    texts, _, _ = corpus
    expected = run(texts)
    # Tiny slices make most examples straddle several of them.
    monkeypatch.setattr(minhash, "_SHINGLE_COLUMNS", 7)
    assert run(texts) == expected


def test_very_long_examples(rng: random.Random) -> None:
    long_text = sentence(rng, 20_000)
    result = run([long_text, change_one_word(long_text), sentence(rng, 20_000)])
    assert [(a, b) for a, b, _ in result.near] == [(1, 2)]
    assert result.near[0][2] > 0.97


def test_word_tables_are_cached_on_disk_and_rebuilt_when_the_file_is_damaged(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FINETUNE_CACHE_DIR", str(tmp_path / "cache"))
    built = word_tables._build_tables()
    assert word_tables._load_cached_tables() is None  # nothing cached yet
    word_tables._store_cached_tables(built)
    loaded = word_tables._load_cached_tables()
    assert loaded is not None
    for name in word_tables._TABLE_NAMES:
        assert loaded[name].dtype == built[name].dtype
        assert np.array_equal(loaded[name], built[name]), name
    # The tables the sketches use are the same whether built or loaded.
    assert np.array_equal(word_tables._tables().fold, built["fold"])
    # A damaged file is not used: one changed byte, then a truncated file.
    path = word_tables._tables_cache_path()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert word_tables._load_cached_tables() is None
    path.write_bytes(bytes(data[:1000]))
    assert word_tables._load_cached_tables() is None
    # A cache that cannot be written only means building again.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("FINETUNE_CACHE_DIR", str(blocker / "cache"))
    word_tables._store_cached_tables(built)
    assert word_tables._load_cached_tables() is None


def test_repeated_lines_are_hashed_once_with_the_same_words_and_nfc_as_whole_texts(monkeypatch) -> None:
    rng = random.Random(5)
    shared = [
        "cafe\u0301 cr\u00e8me \u1100\u1161 a\u0316\u0301",  # not NFC: the decomposed accent composes, marks reorder
        "\u0301 starts with a combining mark",
        "",
        "\u4e00\u4e01 CJK \u30fb mixed",
    ]
    system = "system: You are a support agent. " + sentence(rng, 2000)
    texts = []
    for i in range(300):
        lines = [rng.choice(shared) for _ in range(rng.randint(0, 3))]
        lines.insert(rng.randint(0, len(lines)), f"user: ticket {i} {sentence(rng, 8)}")
        texts.append("\n".join([system if i % 3 else shared[0], *lines]))
    long_line = "tools: " + " ".join(f"w{i}" for i in range(word_tables._PIECE_CHARS // 3))  # longer than a chunk
    texts += ["", "\n\n", shared[0], f"{system}\n{long_line}\n{shared[1]}"]
    whole = dedupe_words._nfc_word_hashes
    sizes: list[int] = []

    def spy(batch: list[str], salt: object) -> tuple:
        sizes.append(len(batch))
        return whole(batch, salt)

    monkeypatch.setattr(dedupe_words, "_nfc_word_hashes", spy)
    for salt in (0, 12345):
        nfc, words, counts = dedupe_words.nfc_word_hashes(texts, salt)
        whole_nfc, whole_words, whole_counts = whole(texts, salt)
        assert nfc == whole_nfc == [unicodedata.normalize("NFC", t) for t in texts]
        assert counts.dtype == whole_counts.dtype == np.int64
        assert counts.tolist() == whole_counts.tolist()
        assert np.array_equal(words, whole_words)
    # The repeated lines were hashed once: the distinct lines, not the texts, were hashed.
    distinct = {line for text in texts for line in text.split("\n")}
    assert sizes == [len(distinct)] * 2
    # Texts that share (almost) nothing take the plain path; the answer is the same either way.
    sizes.clear()
    unique = [f"user: {sentence(rng, 12)}\nassistant: {i}" for i in range(50)]
    assert np.array_equal(dedupe_words.nfc_word_hashes(unique)[1], whole(unique, 0)[1])
    assert sizes == [len(unique)]
