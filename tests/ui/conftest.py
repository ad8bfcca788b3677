"""Fixtures of the web UI tests: a signed-in test client, seeded project data, and (for browser tests) Chromium."""

from __future__ import annotations

import re
from typing import Any

import pytest

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def sign_in(client: Any, key: str, reviewer: str = "Ana Reviewer") -> None:
    token = csrf_of(client.get("/ui/login").text)
    response = client.post(
        "/ui/login",
        data={"csrf_token": token, "api_key": key, "reviewer": reviewer, "next": "/ui/jobs"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text


@pytest.fixture
def seeded(settings, project):  # type: ignore[no-untyped-def]
    from ui.seed import seed_project

    return seed_project(settings, project["id"])


@pytest.fixture
def app(settings):  # type: ignore[no-untyped-def]
    """The app with the rate limiter on, but an anonymous budget no test here reaches: these tests sign in many times
    from one address, and on the PostgreSQL + Redis run the address's bucket lives in Redis across tests (a bucket an
    earlier app left empty refills at this app's rate, so the rate is raised with the burst)."""
    from service.api.app import create_app

    limits = {"anonymous_rate_limit_burst": 1_000_000, "anonymous_rate_limit_per_s": 1_000_000.0}
    return create_app(settings.model_copy(update=limits))
