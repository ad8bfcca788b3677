"""The review queue's sample: proportional strata, seeded, shuffled, blinded with pairwise sides drawn per item."""

from __future__ import annotations

from service.reviews.sampling import Unit, allocate, draw


def test_allocate_by_largest_remainder():
    # 20 of 80: exact shares 5, 5, 2.5, 7.5 -> floors 5, 5, 2, 7 (19); the one left goes to the larger remainder,
    # c and d tie at 0.5 and c comes first by name.
    assert allocate({"a": 20, "b": 20, "c": 10, "d": 30}, 20) == {"a": 5, "b": 5, "c": 3, "d": 7}
    # 10 of 30 split 1 / 29: exact 0.333 and 9.667 -> 0 and 9, the remainder goes to the bigger fraction.
    assert allocate({"rare": 1, "common": 29}, 10) == {"rare": 0, "common": 10}
    assert allocate({"a": 3, "b": 2}, 50) == {"a": 3, "b": 2}  # asking for more than there is takes everything
    assert sum(allocate({f"s{i}": i + 1 for i in range(9)}, 17).values()) == 17


def _units(n: int, pair: bool = False) -> list[Unit]:
    return [
        Unit(
            f"test:{i}",
            "pass" if i % 3 else "fail",
            (("base", f"s{i}a"), ("tuned", f"s{i}b")) if pair else (("base", f"s{i}a"),),
        )
        for i in range(n)
    ]


def test_draw_is_seeded_stratified_and_shuffled():
    units = _units(30)  # 10 fail, 20 pass
    items, strata, available = draw(units, 12, seed=5)
    assert available == {"fail": 10, "pass": 20} and strata == {"fail": 4, "pass": 8}
    assert [i.position for i in items] == list(range(12))
    assert sum(i.stratum == "fail" for i in items) == 4
    assert len({i.example_key for i in items}) == 12
    # Shuffled: not the sorted order of the strata.
    assert [i.stratum for i in items] != sorted(i.stratum for i in items)
    # The same seed gives the same queue whatever order the units come in; another seed another queue.
    assert draw(list(reversed(units)), 12, seed=5)[0] == items
    assert draw(units, 12, seed=6)[0] != items
    assert all(i.sides == [{"label": "A", "candidate": "base", "sample_id": f"s{i.example_key[5:]}a"}] for i in items)


def test_pairwise_sides_are_drawn_per_item():
    items, _, _ = draw(_units(40, pair=True), 40, seed=1)
    assert all([s["label"] for s in i.sides] == ["A", "B"] for i in items)
    on_a = [i.sides[0]["candidate"] for i in items]
    assert 0 < on_a.count("base") < 40  # 40 fair coins all alike: p = 2^-39
    assert all({s["candidate"] for s in i.sides} == {"base", "tuned"} for i in items)
