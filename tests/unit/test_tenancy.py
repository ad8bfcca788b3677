"""get_owned / find_owned: another project's row answers exactly as a missing one."""

from __future__ import annotations

import pytest
from sqlmodel import select

from service.db import session_scope
from service.errors import NotFound
from service.projects.models import ApiKey
from service.tenancy import find_owned, get_owned


def test_another_projects_row_is_not_found_like_a_missing_one(settings, project, other_project) -> None:
    with session_scope(settings) as session:
        key = session.exec(select(ApiKey).where(ApiKey.project_id == project["id"])).one()
        assert get_owned(session, ApiKey, key.id, project["id"], "api_key").id == key.id
        assert find_owned(session, ApiKey, key.id, other_project["id"]) is None
        with pytest.raises(NotFound) as foreign:
            get_owned(session, ApiKey, key.id, other_project["id"], "api_key")
        with pytest.raises(NotFound) as missing:
            get_owned(session, ApiKey, "key_missing", other_project["id"], "api_key")
    assert foreign.value.code == missing.value.code == "api_key_not_found"
    assert str(foreign.value).replace(key.id, "X") == str(missing.value).replace("key_missing", "X")
