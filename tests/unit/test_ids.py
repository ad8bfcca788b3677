from service.ids import new_id


def test_ids_are_prefixed_and_strictly_increasing():
    ids = [new_id("job") for _ in range(2000)]
    assert all(i.startswith("job_") and len(i) == 30 for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
