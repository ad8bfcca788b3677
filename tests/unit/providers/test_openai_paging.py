"""Every listing the OpenAI code walks is bounded: against the emulator answering the same page again and again with
``has_more: true`` and a repeated id (as a server replaying the published examples does), each walk stops after the
two requests that show the page does not advance, with a clear transient error; repeated ids are kept once."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import openai
import pytest

from emulator import EmulatorConfig, OpenAIEmulator
from service.evaluations.generation import GenRequest
from service.evaluations.generation.batch import BatchError, find_batch, find_input_file, submit
from service.providers.openai.paging import Listing, PageNotAdvancing, UnusableAnswer
from service.providers.openai.provider import OpenAIProvider

EVENTS = "GET /v1/fine_tuning/jobs/{job_id}/events"
CHECKPOINTS = "GET /v1/fine_tuning/jobs/{job_id}/checkpoints"
FILES = "GET /v1/files"
BATCHES = "GET /v1/batches"


@pytest.fixture
def emu() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(config=EmulatorConfig(speed=0)) as emulator:
        yield emulator


@pytest.fixture
def provider(emu: OpenAIEmulator, settings) -> OpenAIProvider:  # type: ignore[no-untyped-def]
    # ``settings``: the test outbound policy, which lets the provider's guarded client reach the emulator on loopback.
    return OpenAIProvider(api_key="sk-test", base_url=emu.base_url, timeout=10.0, max_retries=0)


@pytest.fixture
def finished_job(emu: OpenAIEmulator, provider: OpenAIProvider, chat_jsonl: bytes, tmp_path) -> str:  # type: ignore[no-untyped-def]
    from service.providers.base import JobSpec

    path = tmp_path / "train.jsonl"
    path.write_bytes(chat_jsonl)
    file_id = provider.upload_file(path, sha256="a" * 64, purpose="fine-tune")
    job = provider.create_job(
        JobSpec(our_job_id="job_ours", model="gpt-4o-mini", method="supervised", training_file=file_id)
    )
    emu.run_until_idle()
    return job.id


def _calls(emu: OpenAIEmulator, route: str) -> int:
    return emu.calls().get(route, 0)


def test_events_that_do_not_advance_stop_after_two_requests(emu, provider, finished_job) -> None:  # type: ignore[no-untyped-def]
    normal = provider.list_events(finished_job, after=None)
    assert len(normal) > 5 and len({e.id for e in normal}) == len(normal)

    emu.add_fault(r"/events$", "repeat_page", probability=1.0)
    before = _calls(emu, EVENTS)
    with pytest.raises(PageNotAdvancing, match="provider answered a page that does not advance") as caught:
        provider.list_events(finished_job, after=None)
    assert caught.value.transient and caught.value.code == "provider_page_not_advancing"
    assert _calls(emu, EVENTS) - before == 2


def test_a_repeated_id_is_kept_once(emu, provider, finished_job) -> None:  # type: ignore[no-untyped-def]
    normal = provider.list_events(finished_job, after=None)
    # Only the first answer misbehaves (its newest event again at the end, has_more); the walk goes on from there.
    emu.add_fault(r"/events$", "repeat_page", count=1)
    again = provider.list_events(finished_job, after=None)
    assert [e.id for e in again] == [e.id for e in normal]


def test_checkpoints_that_do_not_advance_stop_after_two_requests(emu, provider, finished_job) -> None:  # type: ignore[no-untyped-def]
    assert provider.list_checkpoints(finished_job)
    emu.add_fault(r"/checkpoints$", "repeat_page", probability=1.0)
    before = _calls(emu, CHECKPOINTS)
    with pytest.raises(PageNotAdvancing):
        provider.list_checkpoints(finished_job)
    assert _calls(emu, CHECKPOINTS) - before == 2


def test_file_lookup_that_does_not_advance_stops_after_two_requests(emu, provider, finished_job) -> None:  # type: ignore[no-untyped-def]
    assert provider.find_file(sha256="a" * 64, purpose="fine-tune") is not None
    emu.add_fault(r"^GET /v1/files$", "repeat_page", probability=1.0)
    before = _calls(emu, FILES)
    with pytest.raises(PageNotAdvancing):
        provider.find_file(sha256="b" * 64, purpose="fine-tune")
    assert _calls(emu, FILES) - before == 2


def _request(key: str) -> GenRequest:
    return GenRequest(key=key, model="gpt-4o-mini", messages=[{"role": "user", "content": key}])


def test_batch_lookups_that_do_not_advance_stop_after_two_requests(emu: OpenAIEmulator) -> None:
    with openai.OpenAI(base_url=emu.base_url, api_key="sk-test", max_retries=0, timeout=10) as client:
        submit(client, [_request("a")], "eval_1/a0")
        emu.add_fault(r"^GET /v1/batches$", "repeat_page", probability=1.0)
        before = _calls(emu, BATCHES)
        with pytest.raises(PageNotAdvancing):
            find_batch(client, "eval_1/other")
        assert _calls(emu, BATCHES) - before == 2
        # Inside submit the same stop is a transient BatchError carrying the state: the caller backs off.
        with pytest.raises(BatchError, match="does not advance") as caught:
            submit(client, [_request("b")], "eval_1/b0")
        assert caught.value.transient and caught.value.state is not None

        emu.add_fault(r"^GET /v1/files$", "repeat_page", probability=1.0)
        before = _calls(emu, FILES)
        with pytest.raises(PageNotAdvancing):
            find_input_file(client, "no-such-file.jsonl", 10)
        assert _calls(emu, FILES) - before == 2


def _page(ids: list[str], has_more: bool = True) -> SimpleNamespace:
    return SimpleNamespace(data=[SimpleNamespace(id=i) for i in ids], has_more=has_more)


def test_listing_stops_at_the_page_cap() -> None:
    asked: list[str | None] = []

    def endless(after: str | None) -> SimpleNamespace:
        asked.append(after)
        n = len(asked)
        return _page([f"x{n}a", f"x{n}b"])

    listing = Listing(endless, what="an endless list", max_pages=5)
    assert [i.id for i in listing] == [f"x{n}{s}" for n in range(1, 6) for s in "ab"]
    assert listing.truncated and listing.requests == 5
    assert asked == [None, "x1b", "x2b", "x3b", "x4b"]


def test_listing_stops_when_the_cursor_comes_back() -> None:
    # New ids, but the page ends on the cursor it was asked to pass: the next request would be the same one.
    pages = {None: _page(["a", "b"]), "b": _page(["c", "b"])}
    listing = Listing(lambda after: pages[after], what="a looping list", max_pages=50)
    with pytest.raises(PageNotAdvancing):
        list(listing)
    assert listing.requests == 2


def test_listing_stops_when_a_page_ignores_its_cursor() -> None:
    # A server that ignores `after` while new items keep arriving answers new ids each time: the cursor's own item
    # in the page after it gives the loop away.
    answers = iter([_page(["b", "a"]), _page(["c", "b", "a"]), _page(["d", "c", "b", "a"])])
    listing = Listing(lambda _after: next(answers), what="a list that ignores after", max_pages=50)
    with pytest.raises(PageNotAdvancing, match="holds 'a' again"):
        list(listing)
    assert listing.requests == 2


def test_listing_refuses_items_without_ids() -> None:
    page = SimpleNamespace(data=[SimpleNamespace(id=None)], has_more=False)
    with pytest.raises(UnusableAnswer, match="no id"):
        list(Listing(lambda _after: page, what="a list", max_pages=3))


def test_listing_ends_on_an_empty_page_or_no_more() -> None:
    assert list(Listing(lambda _a: _page([], has_more=True), what="empty", max_pages=3)) == []
    assert [i.id for i in Listing(lambda _a: _page(["a"], has_more=False), what="one", max_pages=3)] == ["a"]
