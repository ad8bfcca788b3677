"""The per-project and total limits on provider calls made while the API answers a request."""

from __future__ import annotations

import pytest

from service.api.outbound import OutboundGate
from service.errors import RateLimited, Unavailable


def test_a_project_gets_at_most_its_share_and_others_keep_theirs() -> None:
    gate = OutboundGate(per_project=2, total=5, retry_after_s=3)
    with gate.slot("a"), gate.slot("a"):
        with pytest.raises(RateLimited) as refused, gate.slot("a"):
            pass
        assert refused.value.code == "too_many_outbound_calls"
        assert refused.value.extra["retry_after"] == 3
        with gate.slot("b"):
            assert gate.in_flight("a") == 2 and gate.in_flight("b") == 1 and gate.in_flight() == 3
    assert gate.in_flight() == 0 and gate.in_flight("a") == 0


def test_the_total_is_bounded_across_projects() -> None:
    gate = OutboundGate(per_project=2, total=3, retry_after_s=1)
    with gate.slot("a"), gate.slot("b"), gate.slot("c"):
        with pytest.raises(Unavailable) as busy, gate.slot("d"):
            pass
        assert busy.value.code == "outbound_busy"
    with gate.slot("d"):
        assert gate.in_flight() == 1


def test_a_slot_is_given_back_when_the_call_fails() -> None:
    gate = OutboundGate(per_project=1, total=1, retry_after_s=1)
    with pytest.raises(RuntimeError), gate.slot("a"):
        raise RuntimeError("provider broke")
    with gate.slot("a"):
        assert gate.in_flight("a") == 1
