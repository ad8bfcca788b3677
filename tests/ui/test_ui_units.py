"""Pure parts of the web UI: the session cookie, the origin check, the SVG chart and the word diff."""

from __future__ import annotations

import itertools
import re
import time

from service.ui import charts, session
from service.ui.diff import word_diff

KEY = session.session_key(b"a-server-secret-of-enough-bytes")


def test_a_session_round_trips_and_any_change_voids_it() -> None:
    s = session.sign_in("proj_1", "key_1", "  Ana  ", now=1000, ttl_s=60)
    assert s.reviewer == "Ana" and s.signed_in
    value = session.encode(s, KEY)
    assert session.decode(value, KEY, now=1059) == s
    assert session.decode(value, KEY, now=1060) is None  # expired
    assert session.decode(value, session.session_key(b"another-server-secret-000"), now=1000) is None
    payload, mac = value.split(".")
    forged = session.encode(session.sign_in("proj_2", "key_1", "Ana", now=1000, ttl_s=60), KEY).split(".")[0]
    assert session.decode(f"{forged}.{mac}", KEY, now=1000) is None
    for junk in (None, "", "x", "a.b.c", f"{payload}.", "!!!.!!!"):
        assert session.decode(junk, KEY, now=1000) is None


def test_every_session_has_its_own_csrf_token() -> None:
    a, b = session.anonymous(0, 60), session.anonymous(0, 60)
    assert a.csrf != b.csrf and not a.signed_in
    assert session.csrf_ok(a, a.csrf)
    assert not session.csrf_ok(a, b.csrf)
    assert not session.csrf_ok(a, None) and not session.csrf_ok(None, a.csrf)


def test_same_origin() -> None:
    assert session.same_origin("http://host:8000", None, "http", "host:8000")
    assert session.same_origin(None, "http://host:8000/ui/login", "http", "host:8000")
    assert session.same_origin(None, None, "http", "host:8000")  # not a browser: the token still decides
    assert not session.same_origin("https://evil.example", None, "http", "host:8000")
    assert not session.same_origin("http://host:8000", None, "https", "host:8000")
    assert not session.same_origin(None, "http://evil.example/x", "http", "host:8000")
    assert not session.same_origin("null", "http://host:8000/", "http", "host:8000")


def test_nice_ticks_cover_the_range_with_round_steps() -> None:
    assert charts.nice_ticks(0, 2.37) == [0, 1, 2, 3]
    assert charts.nice_ticks(0, 0.9) == [0, 0.25, 0.5, 0.75, 1.0]
    assert charts.nice_ticks(1, 1)[0] <= 1 <= charts.nice_ticks(1, 1)[-1]
    ticks = charts.nice_ticks(0, 97, 6)
    assert ticks[0] == 0 and ticks[-1] >= 97 and len({round(b - a, 9) for a, b in itertools.pairwise(ticks)}) == 1


def test_the_loss_curve_has_one_point_per_logged_step() -> None:
    points = [{"step": s, "train_loss": 2.0 / s} for s in range(1, 31)]
    for p in points[4::5]:
        p["valid_loss"] = 2.2 / p["step"]
    points.append({"step": 31, "train_loss": float("nan")})  # not drawable: left out, not a broken path
    svg = str(charts.loss_curve(points))
    train = svg.split('data-series="train loss"')[1].split("</g>")[0]
    valid = svg.split('data-series="validation loss"')[1].split("</g>")[0]
    assert train.count("<circle") == 30 and valid.count("<circle") == 6
    assert re.findall(r'data-x="(\d+)"', valid) == ["5", "10", "15", "20", "25", "30"]
    assert "nan" not in svg.lower()


def test_an_empty_curve_says_so_and_names_are_escaped() -> None:
    assert "No loss logged yet" in str(charts.loss_curve([]))
    svg = str(
        charts.line_chart(
            [charts.Series('<script>alert("x")</script>', "train", [(1, 1.0), (2, 0.5)])],
            x_label="step",
            y_label="loss",
            title="t",
        )
    )
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_word_diff_marks_changed_words_on_each_side() -> None:
    left, right = word_diff("the refund is late", "the refund was late today")
    assert [(p.op, p.text) for p in left] == [("same", "the refund "), ("removed", "is "), ("same", "late")]
    assert [(p.op, p.text) for p in right] == [
        ("same", "the refund "),
        ("added", "was "),
        ("same", "late "),
        ("added", "today"),
    ]
    assert word_diff(None, "x") == ([], [word_diff("", "x")[1][0]])


def test_a_lone_or_failed_answer_is_not_diffed_against_nothing() -> None:
    from service.evaluations.models import EvaluationSample
    from service.ui.evaluation_page import _pieces

    def row(output: str | None, ok: bool = True) -> EvaluationSample:
        return EvaluationSample(
            evaluation_id="e", candidate="c", example_key="test:0", split="test", example_index=0, output=output, ok=ok
        )

    assert [(p.op, p.text) for p in _pieces(row("yes"), None)[0]] == [("same", "yes")]
    left, right = _pieces(row("yes"), row(None, ok=False))
    assert [(p.op, p.text) for p in left] == [("same", "yes")] and right == []
    left, right = _pieces(row("yes no"), row("yes"))
    assert [p.op for p in left] == ["same", "removed"] and [p.op for p in right] == ["same"]


def test_the_rate_limiter_knows_a_signed_in_session_without_a_database() -> None:
    secret = b"a-server-secret-of-enough-bytes"
    identify = session.rate_identity(secret)
    key = session.session_key(secret)
    signed_in = session.encode(session.sign_in("proj_1", "key_1", "Ana", now=time.time(), ttl_s=60), key)
    assert identify(signed_in) == "ui:key_1"
    assert identify(session.encode(session.anonymous(time.time(), 60), key)) is None
    assert identify(signed_in[:-3] + "AAA") is None
    assert identify(session.encode(session.sign_in("p", "k", "A", now=0, ttl_s=60), key)) is None  # expired
    assert identify(None) is None
