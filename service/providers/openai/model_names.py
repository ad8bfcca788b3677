"""Which model names OpenAI trains, for requests that name only a model (the OpenAI-shaped routes)."""

from __future__ import annotations

import re

# OpenAI's fine-tunable families and their fine-tunes (``ft:gpt-4.1-mini-...:org::id`` trains further).
_OPENAI_MODEL = re.compile(r"^(ft:)?(gpt-|o[1-9]|chatgpt-|davinci-002|babbage-002)")


def claims_openai_model(name: str) -> bool:
    return _OPENAI_MODEL.match(name) is not None
