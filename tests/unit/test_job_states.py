from __future__ import annotations

import pytest

from api_schemas.jobs import JobStatus as S
from service.jobs import states


def test_terminal_states_have_no_exits():
    for t in states.TERMINAL:
        assert states.TRANSITIONS[t] == frozenset()


def test_every_status_has_an_entry():
    assert set(states.TRANSITIONS) == set(S)


def test_every_non_terminal_state_can_fail_and_be_cancelled():
    for s in set(S) - states.TERMINAL:
        assert S.failed in states.TRANSITIONS[s], s
        assert S.cancelled in states.TRANSITIONS[s], s


def test_provider_may_skip_states_but_not_go_back():
    assert states.can_transition(S.submitted, S.running)
    assert states.can_transition(S.validating_files, S.succeeded)
    assert not states.can_transition(S.running, S.queued)
    assert not states.can_transition(S.queued, S.validating_files)
    with pytest.raises(states.InvalidTransition):
        states.check_transition(S.succeeded, S.running)


def test_actions_only_where_meaningful():
    assert S.running in states.ACTIONS["pause"] and S.queued not in states.ACTIONS["pause"]
    assert states.ACTIONS["resume"] == {S.paused}
    assert not (states.ACTIONS["cancel"] & states.TERMINAL)
