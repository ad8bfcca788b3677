"""The committed ``openapi.json`` is generated from the app; a test fails when it is stale."""

from __future__ import annotations

import json
from pathlib import Path

ROOT_SPEC = Path(__file__).resolve().parents[2] / "openapi.json"


def render() -> str:
    from service.api.app import create_app

    spec = create_app(migrate=False).openapi()
    return json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(path: Path = ROOT_SPEC) -> Path:
    path.write_text(render())
    return path
