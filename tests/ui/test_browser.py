"""The web UI in a real headless Chromium (the system's /usr/bin/chromium, driven by Playwright; nothing downloaded).

Set ``FINETUNE_UI_SCREENSHOTS=<folder>`` to also save a full-page screenshot of each page visited.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from helpers import serve

CHROMIUM = os.environ.get("FINETUNE_UI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = os.environ.get("FINETUNE_UI_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
    )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def base_url(app):  # type: ignore[no-untyped-def]
    # ``app`` (tests/ui/conftest.py) keeps the rate limiter on: signed-in pages draw on their key's budget.
    with serve(app) as url:
        yield url


@pytest.fixture
def page(browser, base_url):  # type: ignore[no-untyped-def]
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    # A CSP violation (an inline style or script that slipped in) is reported on the console, not raised.
    pg.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    pg.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}") or dialog.dismiss())
    pg.ui_errors = errors  # a test that loads a 404 on purpose clears the browser's report of it
    yield pg
    context.close()
    assert not errors, errors


def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def sign_in(page: Any, key: str, reviewer: str = "Ana Reviewer", *, start: str = "/ui/jobs") -> None:
    page.goto(start)
    assert "/ui/login" in page.url
    page.fill("input[name=api_key]", key)
    page.fill("input[name=reviewer]", reviewer)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{start}")


def test_sign_in_datasets_job_curve_and_flipped_examples(page, settings, project, seeded) -> None:
    from ui.seed import SCRIPT_ANSWER, add_metrics, finish_job

    page.goto("/ui/login")
    shot(page, "login")
    sign_in(page, project["key"])
    cookie = next(c for c in page.context.cookies() if c["name"] == "finetune_ui")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/ui"
    assert page.locator(".who .reviewer").inner_text() == "Ana Reviewer"
    shot(page, "jobs")

    # Datasets: the report of the broken file, issue by line and field.
    page.click("nav >> text=Datasets")
    shot(page, "datasets")
    page.click(f"text={seeded.invalid_dataset_id}")
    lines = page.locator("table.issues tbody tr.sev-error td:first-child").all_inner_texts()
    assert {"2", "3", "4"} <= set(lines), lines
    assert page.locator("table.issues tbody tr td:nth-child(2) code").count() >= 3
    shot(page, "dataset")

    # The job: one point per logged step in each series, and new steps appear while it runs, without a reload.
    page.goto(f"/ui/jobs/{seeded.job_id}")
    train = page.locator('#loss-curve g[data-series="train loss"] circle')
    valid = page.locator('#loss-curve g[data-series="validation loss"] circle')
    assert train.count() == len(seeded.train_steps) and valid.count() == len(seeded.valid_steps)
    assert [int(x) for x in train.evaluate_all("els => els.map(e => e.dataset.x)")] == seeded.train_steps
    shot(page, "job")
    more_train, more_valid = add_metrics(settings, seeded.job_id, range(21, 31))
    page.wait_for_function(
        "n => document.querySelectorAll('#loss-curve g[data-series=\"train loss\"] circle').length === n",
        arg=len(seeded.train_steps) + len(more_train),
        timeout=15_000,
    )
    assert valid.count() == len(seeded.valid_steps) + len(more_valid)
    assert "30 steps logged" in page.locator("#curve-note").inner_text()
    # The job finishes: the page sees it, stops polling, and once reloaded shows how to call the model.
    finish_job(settings, seeded.job_id, "ft:smollm2-135m-instruct:test::tickets")
    page.wait_for_function("() => document.getElementById('loss-curve').dataset.active === 'false'", timeout=15_000)
    assert page.locator("#job-status .badge").inner_text() == "succeeded"
    page.reload()
    snippet = page.locator("#sdk-snippet").inner_text()
    assert 'model="ft:smollm2-135m-instruct:test::tickets"' in snippet
    assert f'base_url="{page.url.split("/ui/")[0]}/v1"' in snippet
    shot(page, "job-succeeded")

    # The evaluation: intervals per candidate, then only the flipped examples, side by side with a word diff.
    page.goto(f"/ui/evaluations/{seeded.evaluation_id}")
    assert page.locator('table.metrics tr[data-candidate="fine-tuned"] .ci').count() >= 1
    assert page.locator("table.comparison").count() == 1
    shot(page, "evaluation")
    page.click("text=disagreements (flipped)")
    page.wait_for_url("**only=disagreements**")
    keys = page.locator("article.example").evaluate_all("els => els.map(e => e.dataset.key)")
    assert keys == [f"test:{i}" for i in seeded.flipped]
    first = page.locator("article.example").first
    assert first.locator(".side.baseline pre.answer").inner_text().strip()
    assert first.locator(".side.candidate pre.answer").inner_text().strip()
    assert page.locator("article.example ins").count() >= 1 and page.locator("article.example del").count() >= 1
    shot(page, "evaluation-flipped")
    # A model's answer with a <script> in it is shown as text and never runs.
    page.click("text=all")
    assert page.locator("pre.answer", has_text=SCRIPT_ANSWER).count() == 2
    assert page.title() != "pwned"


def test_rate_three_samples_in_the_queue_and_see_the_figures_update(page, project, seeded) -> None:
    sign_in(page, project["key"], "Ana Reviewer", start=f"/ui/evaluations/{seeded.evaluation_id}")
    page.select_option("select[name=mode]", "pass_fail")
    page.fill("input[name=size]", "6")
    page.click("text=Start a review")
    page.wait_for_url("**/ui/reviews/rvq_*")
    items = page.locator("#items article.review-item")
    assert items.count() == 5
    # Blind: the answers carry neutral labels, never the candidates' names.
    assert "fine-tuned" not in page.locator("#items").inner_text()
    shot(page, "review")
    agreement = page.locator('table.agreement tr[data-grader="exact"]')
    assert agreement.get_attribute("data-items") == "0"
    for n, button in enumerate(("Pass", "Fail", "Pass"), start=1):
        first = items.first
        rated = first.get_attribute("data-item")
        first.locator("textarea[name=comment]").fill(f"rating {n}")
        first.locator(f"button:text-is('{button}')").click()
        page.wait_for_function(
            "n => document.getElementById('n-ratings').textContent.trim() === String(n)", arg=n, timeout=15_000
        )
        assert agreement.get_attribute("data-items") == str(n)
        assert page.locator(f'article[data-item="{rated}"]').count() == 0
    assert page.locator("#my-ratings").inner_text() == "3"
    assert page.locator("#items-complete").inner_text() == "3 / 6"
    shot(page, "review-rated")
    page.goto("/ui/reviews")
    assert page.locator("table.list tbody tr").count() == 1
    shot(page, "reviews")


def test_a_second_projects_key_sees_none_of_it(page, other_project, seeded) -> None:
    sign_in(page, other_project["key"], "Bo")
    for path in ("/ui/datasets", "/ui/jobs", "/ui/evaluations"):
        page.goto(path)
        text = page.content()
        assert seeded.job_id not in text and seeded.evaluation_id not in text and seeded.valid_dataset_id not in text
    for path in (
        f"/ui/jobs/{seeded.job_id}",
        f"/ui/evaluations/{seeded.evaluation_id}",
        f"/ui/datasets/{seeded.valid_dataset_id}",
    ):
        response = page.goto(path)
        assert response is not None and response.status == 404, path
        assert "not found" in page.locator(".error").inner_text()
    page.ui_errors[:] = [e for e in page.ui_errors if "status of 404" not in e]
