"""The dispatcher against real local receivers: slow endpoints do not hold up fast ones, outcomes are recorded with the
rules of ``record_outcome``, leases keep two dispatchers apart and bring a dead one's rows back. Time is travelled with
``service.clock``, never slept."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import timedelta

import pytest
from sqlmodel import select

from api_schemas.webhooks import WebhookEndpointCreate
from helpers import wait_for
from service import clock, queue
from service.db import session_scope
from service.events import service as events
from service.events.fanout import fanout
from service.events.models import Event
from service.settings import get_settings, reset_settings_cache
from service.webhooks import dispatch
from service.webhooks.delivery import lease_seconds
from service.webhooks.dispatch import Dispatcher, claim_due, dispatch_due
from service.webhooks.models import Delivery, DeliveryAttempt, WebhookEndpoint
from service.webhooks.sender import Disposition
from service.webhooks.service import create_endpoint


@pytest.fixture
def configure(settings, monkeypatch):  # type: ignore[no-untyped-def]
    """Settings for loopback receivers, with overrides (``FINETUNE_`` variables without the prefix)."""

    def apply(**overrides: object):  # type: ignore[no-untyped-def]
        monkeypatch.setenv("FINETUNE_WEBHOOK_ALLOW_HTTP", "true")
        monkeypatch.setenv("FINETUNE_WEBHOOK_ALLOWLIST", '["127.0.0.1/32"]')
        for name, value in overrides.items():
            monkeypatch.setenv(f"FINETUNE_{name.upper()}", str(value))
        reset_settings_cache()
        return get_settings()

    return apply


def add_endpoint(settings, project_id: str, url: str) -> str:  # type: ignore[no-untyped-def]
    with session_scope(settings) as s:
        ep, _secret = create_endpoint(s, settings, project_id, WebhookEndpointCreate(url=url))
        return ep.id


def add_events(settings, project_id: str, n: int) -> list[str]:  # type: ignore[no-untyped-def]
    """``n`` events, each fanned out (the real fan-out) to every endpoint of the project."""
    ids = []
    for i in range(n):
        with session_scope(settings) as s:
            ids.append(events.record(s, project_id, "ping", {"object": "ping", "n": i}).id)
        fanout(ids[-1])
    return ids


def deliveries(settings, **where: str) -> list[Delivery]:  # type: ignore[no-untyped-def]
    with session_scope(settings) as s:
        stmt = select(Delivery)
        for name, value in where.items():
            stmt = stmt.where(getattr(Delivery, name) == value)
        return list(s.exec(stmt))


def attempts(settings, delivery_ids: list[str]) -> list[DeliveryAttempt]:  # type: ignore[no-untyped-def]
    with session_scope(settings) as s:
        return list(s.exec(select(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(delivery_ids))))


def endpoint(settings, endpoint_id: str) -> WebhookEndpoint:  # type: ignore[no-untyped-def]
    with session_scope(settings) as s:
        return s.get(WebhookEndpoint, endpoint_id)


def sent_keys(receiver) -> Counter[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(webhook-id, endpoint marker) of every request a receiver got."""
    with receiver.state.lock:
        return Counter((r.headers["webhook-id"], r.query) for r in receiver.state.requests)


def test_a_hanging_endpoint_does_not_hold_up_the_others(configure, project, receiver, second_receiver):
    # Four slots, at most two per endpoint; the hanging endpoint has three deliveries, so it could fill every slot.
    s = configure(webhook_timeout_s=2, webhook_connect_timeout_s=1, webhook_dispatch_concurrency=4)
    slow = add_endpoint(s, project["id"], receiver.url("/slow?delay=60"))
    fast = [add_endpoint(s, project["id"], second_receiver.url(f"/ok?ep={i}")) for i in range(5)]
    add_events(s, project["id"], 3)

    report = Dispatcher(s).run()

    kinds = ["slow" if ep == slow else "fast" for _, ep, _ in report.outcomes]
    assert kinds == ["fast"] * 15 + ["slow"] * 3, kinds
    assert all(d is Disposition.SUCCESS for _, ep, d in report.outcomes if ep != slow)
    # The same order in the recorded attempts: every fast attempt ended before the first slow one did.
    fast_ids = [d.id for d in deliveries(s) if d.endpoint_id in fast]
    slow_rows = deliveries(s, endpoint_id=slow)

    def ended(a: DeliveryAttempt):  # type: ignore[no-untyped-def]
        return a.started_at + timedelta(milliseconds=a.duration_ms)

    fast_attempts = attempts(s, fast_ids)
    slow_attempts = attempts(s, [d.id for d in slow_rows])
    assert len(fast_attempts) == 15 and len(slow_attempts) == 3
    assert max(map(ended, fast_attempts)) <= min(map(ended, slow_attempts))
    # At most two in flight to the hanging endpoint (the per-endpoint cap, not all four slots): its third delivery
    # started only when one of the first two had timed out.
    first, second, third = sorted(slow_attempts, key=lambda a: a.started_at)
    assert third.started_at >= min(ended(first), ended(second)) - timedelta(milliseconds=50)
    # The hanging endpoint's deliveries failed by the client timeout and are scheduled for the 5 s retry.
    for d in slow_rows:
        (a,) = [a for a in slow_attempts if a.delivery_id == d.id]
        assert d.status == "pending" and d.attempt_count == 1 and d.lease_owner is None
        assert a.status_code is None and "2 s" in a.error
        assert timedelta(seconds=5) <= d.next_run_at - ended(a) <= timedelta(seconds=6)
    assert all(d.status == "succeeded" for d in deliveries(s) if d.endpoint_id in fast)
    assert sent_keys(second_receiver).most_common(1)[0][1] == 1  # each fast delivery sent once


def test_retries_follow_the_schedule_and_retry_after(configure, project, receiver):
    s = configure()
    failing = add_endpoint(s, project["id"], receiver.url("/status/500"))
    busy = add_endpoint(s, project["id"], receiver.url("/status/503?retry_after=600"))
    gone = add_endpoint(s, project["id"], receiver.url("/status/410"))
    add_events(s, project["id"], 1)

    first = Dispatcher(s).run()
    assert first.claimed == 3 and len(first.outcomes) == 3
    by_ep = {d.endpoint_id: d for d in deliveries(s)}
    now = clock.utcnow()
    assert timedelta(seconds=4) < by_ep[failing].next_run_at - now <= timedelta(seconds=5)
    assert timedelta(seconds=595) < by_ep[busy].next_run_at - now <= timedelta(seconds=600)
    assert by_ep[gone].status == "failed" and by_ep[gone].next_run_at is None
    ep = endpoint(s, gone)
    assert ep.status == "disabled" and "410" in ep.disabled_reason
    with session_scope(s) as session:
        disabled = list(session.exec(select(Event).where(Event.type == "webhook_endpoint.disabled")))
    assert [e.data["object"]["id"] for e in disabled] == [gone]

    assert Dispatcher(s).run().claimed == 0  # nothing due yet
    clock.travel(timedelta(seconds=6))
    second = Dispatcher(s).run()
    assert [ep for _, ep, _ in second.outcomes] == [failing]
    by_ep = {d.endpoint_id: d for d in deliveries(s)}
    assert by_ep[failing].attempt_count == 2
    assert timedelta(minutes=4) < by_ep[failing].next_run_at - clock.utcnow() <= timedelta(minutes=5)

    clock.travel(timedelta(minutes=10))
    third = Dispatcher(s).run()
    assert sorted(ep for _, ep, _ in third.outcomes) == sorted([failing, busy])
    assert len([r for r in receiver.state.requests if r.path == "/status/500"]) == 3


def test_an_endpoint_failing_for_days_is_disabled_with_an_event(configure, project, receiver):
    s = configure()
    ep_id = add_endpoint(s, project["id"], receiver.url("/status/500"))
    with session_scope(s) as session:
        session.get(WebhookEndpoint, ep_id).failing_since = clock.utcnow() - timedelta(days=6)
    add_events(s, project["id"], 1)

    report = Dispatcher(s).run()

    assert [d for _, _, d in report.outcomes] == [Disposition.RETRY]
    ep = endpoint(s, ep_id)
    assert ep.status == "disabled" and "failed for 6.0 days" in ep.disabled_reason
    with session_scope(s) as session:
        assert (
            session.exec(select(Event).where(Event.type == "webhook_endpoint.disabled")).one().data["object"]["id"]
            == ep_id
        )
    # The pending retry is not sent to a disabled endpoint: it is closed as failed when it comes due.
    clock.travel(timedelta(seconds=6))
    again = Dispatcher(s).run()
    assert again.claimed == 1 and again.settled == 1 and again.outcomes == []
    (d,) = deliveries(s)
    assert d.status == "failed" and d.next_run_at is None and d.lease_owner is None


def test_two_dispatchers_at_once_never_send_a_delivery_twice(configure, project, receiver):
    s = configure(webhook_dispatch_concurrency=4)
    for i in range(6):
        add_endpoint(s, project["id"], receiver.url(f"/slow?delay=0.02&ep={i}"))
    add_events(s, project["id"], 10)
    start = threading.Barrier(2)
    reports = []

    def run() -> None:
        dispatcher = Dispatcher(s)
        start.wait()
        reports.append(dispatcher.run())

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)

    sent = sent_keys(receiver)
    assert len(sent) == 60 and set(sent.values()) == {1}
    assert sorted(len(r.outcomes) for r in reports)[0] > 0  # both really took part
    assert sum(len(r.outcomes) for r in reports) == 60 and sum(r.lost for r in reports) == 0
    assert {(d.status, d.attempt_count, d.lease_owner) for d in deliveries(s)} == {("succeeded", 1, None)}


def test_a_dead_dispatchers_rows_are_sent_after_its_lease(configure, project, receiver):
    s = configure()
    add_endpoint(s, project["id"], receiver.url("/ok?ep=a"))
    add_endpoint(s, project["id"], receiver.url("/ok?ep=b"))
    add_events(s, project["id"], 3)
    # A dispatcher claims everything and dies before sending.
    with session_scope(s) as session:
        claimed, _ = claim_due(session, "dead-dispatcher", 100, lease_s=lease_seconds(s))
    assert len(claimed) == 6

    assert Dispatcher(s).run().claimed == 0
    assert receiver.state.requests == []

    clock.travel(timedelta(seconds=lease_seconds(s) + 1))
    report = Dispatcher(s).run()
    assert report.claimed == 6 and len(report.outcomes) == 6
    assert set(sent_keys(receiver).values()) == {1} and len(sent_keys(receiver)) == 6
    assert {d.status for d in deliveries(s)} == {"succeeded"}


def test_claims_stop_at_the_per_run_bound(configure, project, receiver, monkeypatch):
    s = configure(webhook_dispatch_batch=4)
    add_endpoint(s, project["id"], receiver.url("/ok"))
    add_events(s, project["id"], 10)
    woken: list[tuple] = []
    monkeypatch.setattr(queue, "enqueue", lambda *a, **kw: woken.append((a, kw)) or True)

    report = dispatch_due(s)

    assert report.claimed == 4 and report.more
    assert woken == [(("webhooks.dispatch",), {"queue": "webhooks"})]  # the rest continues in the next run
    assert len([d for d in deliveries(s) if d.status == "succeeded"]) == 4


def test_a_wake_up_reaches_the_running_dispatcher_instead_of_the_queue(configure, project, receiver, monkeypatch):
    # No polling to fall back on: only the poke can make the running dispatcher look again.
    s = configure(webhook_timeout_s=30, sweep_interval_s=600)
    slow = add_endpoint(s, project["id"], receiver.url("/slow?delay=60&ep=slow"))
    add_events(s, project["id"], 1)
    enqueued: list[tuple] = []
    monkeypatch.setattr(queue, "enqueue", lambda *a, **kw: enqueued.append(a) or True)
    reports = []
    running = threading.Thread(target=lambda: reports.append(dispatch_due(s)))
    running.start()
    wait_for(lambda: receiver.state.in_flight == 1)

    fast = add_endpoint(s, project["id"], receiver.url("/ok?ep=fast"))
    with session_scope(s) as session:
        event = session.exec(select(Event)).one()
        session.add(Delivery(project_id=project["id"], event_id=event.id, endpoint_id=fast, next_run_at=clock.utcnow()))
    assert dispatch.wake(s) is True
    assert dispatch_due(s).coalesced  # a wake-up task arriving now is folded into the running one too
    wait_for(lambda: deliveries(s, endpoint_id=fast)[0].status == "succeeded")
    assert deliveries(s, endpoint_id=slow)[0].attempt_count == 0  # delivered while the slow one still hangs
    assert enqueued == []

    receiver.state.stop.set()  # let the slow receiver answer
    running.join(60)
    (report,) = reports
    assert [ep for _, ep, _ in report.outcomes] == [fast, slow]
    assert dispatch.wake(s) is True and enqueued == [("webhooks.dispatch",)]  # nothing running: a queued wake-up


def test_the_dispatcher_records_each_outcome_with_the_retry_rules(configure, project, receiver):
    s = configure()
    a = add_endpoint(s, project["id"], receiver.url("/status/503?retry_after=120&ep=a"))
    b = add_endpoint(s, project["id"], receiver.url("/status/503?retry_after=120&ep=b"))
    add_events(s, project["id"], 1)
    by_ep = {d.endpoint_id: d.id for d in deliveries(s)}

    Dispatcher(s).run()

    rows = {d.endpoint_id: d for d in deliveries(s)}
    tries = {x.delivery_id: x for x in attempts(s, list(by_ep.values()))}
    for ep in (a, b):
        d, t = rows[ep], tries[by_ep[ep]]
        assert (d.status, d.attempt_count, d.last_status_code, d.lease_owner) == ("pending", 1, 503, None)
        assert timedelta(seconds=115) < d.next_run_at - t.started_at <= timedelta(seconds=125)
        assert (t.status_code, t.error, t.response_excerpt) == (503, "HTTP 503 Service Unavailable", "status body")
        assert t.details["disposition"] == "retry" and t.details["remote_address"] == "127.0.0.1"
        assert endpoint(s, ep).failing_since is not None


def test_the_sweeper_sends_one_wake_up_for_many_due_deliveries(configure, project, receiver, monkeypatch):
    from worker.sweeper import Sweeper

    s = configure()
    for i in range(3):
        add_endpoint(s, project["id"], receiver.url(f"/ok?ep={i}"))
    add_events(s, project["id"], 20)  # 60 due deliveries
    sent: list[tuple] = []
    monkeypatch.setattr(queue, "enqueue", lambda *a, **kw: sent.append((a, kw.get("queue"))) or True)
    sweeper = Sweeper(interval_s=1, requeue_after_s=60)

    sweeper.sweep_once()
    assert [x for x in sent if x[1] == "webhooks"] == [(("webhooks.dispatch",), "webhooks")]
    sent.clear()
    sweeper.sweep_once()
    assert sent == []  # the same backlog is not announced again before requeue_after_s
    add_events(s, project["id"], 1)
    sweeper.sweep_once()
    # New due rows: one more wake-up (the new event's commit also wakes its fan-out, on the default queue).
    assert [x for x in sent if x[1] == "webhooks"] == [(("webhooks.dispatch",), "webhooks")]


def test_the_payload_is_the_signed_envelope(configure, project, receiver):
    import standardwebhooks

    s = configure()
    with session_scope(s) as session:
        _, secret = create_endpoint(session, s, project["id"], WebhookEndpointCreate(url=receiver.url("/ok")))
    (event_id,) = add_events(s, project["id"], 1)
    Dispatcher(s).run()
    (req,) = receiver.state.requests
    payload = standardwebhooks.Webhook(secret).verify(req.body, req.headers)
    assert payload["id"] == event_id == req.headers["webhook-id"] and payload["type"] == "ping"
    assert json.loads(req.body)["data"] == {"object": {"object": "ping", "n": 0}}


def test_a_delivery_that_cannot_be_prepared_fails_after_the_bounded_attempts(configure, project, receiver, monkeypatch):
    s = configure(max_step_attempts=3)
    ep = add_endpoint(s, project["id"], receiver.url("/ok"))
    add_events(s, project["id"], 1)

    def broken(*_a, **_k):  # type: ignore[no-untyped-def]
        raise ValueError("the endpoint's secret cannot be decrypted")

    monkeypatch.setattr(dispatch, "prepare", broken)
    for attempt in (1, 2, 3):
        assert Dispatcher(s).run().errors == 1
        (d,) = deliveries(s)
        assert d.attempts == attempt and "cannot be decrypted" in d.last_error
        clock.travel(timedelta(hours=1))
    assert (d.status, d.next_run_at, d.lease_owner) == ("failed", None, None)
    assert Dispatcher(s).run().claimed == 0 and receiver.state.requests == []
    (logged,) = attempts(s, [d.id])
    assert "3 times" not in logged.error and "cannot be decrypted" in logged.error
    assert endpoint(s, ep).exhausted_in_a_row == 1


def test_an_event_whose_fan_out_keeps_failing_stops_after_the_bounded_attempts(configure, project, monkeypatch):
    from service.events import subscribers

    s = configure(max_step_attempts=2)

    def failing(_session, _event):  # type: ignore[no-untyped-def]
        raise RuntimeError("subscriber is broken")

    monkeypatch.setattr(subscribers, "subscribers", lambda _type: [failing])
    with session_scope(s) as session:
        event_id = events.record(session, project["id"], "ping", {"object": "ping"}).id
    for _ in range(2):
        with pytest.raises(RuntimeError):
            fanout(event_id)
        clock.travel(timedelta(hours=1))
    with session_scope(s) as session:
        event = session.get(Event, event_id)
        assert (event.next_run_at, event.attempts) == (None, 2) and "subscriber is broken" in event.last_error
    assert fanout(event_id) == []  # not due any more
