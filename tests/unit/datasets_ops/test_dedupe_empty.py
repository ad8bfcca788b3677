from service.datasets.dedupe import DuplicateFinder


def test_examples_without_any_words_do_not_break_near_duplicate_search():
    with DuplicateFinder() as finder:
        finder.add(1, "")
        finder.add(2, "")
        result = finder.finish()
    assert result.exact == [[1, 2]] and result.near == []
