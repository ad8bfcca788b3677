"""Which model names are Azure's, for requests that name only a model (the OpenAI-shaped routes).

The models Azure fine-tunes, their prices and retirement dates are in ``service/pricing/azure_price_table.json`` (one
place, versioned, like OpenAI's); this module only recognises Azure's names for fine-tunes.
"""

from __future__ import annotations

import re

# Azure names a fine-tune ``<base>.ft-<32 hex>`` and its checkpoints ``<base>.ft-<hex>:ckpt-step-<n>``.
FINE_TUNE_NAME = re.compile(r"^(?P<base>[A-Za-z0-9.\-]+)\.ft-[0-9a-f]{8,}(:ckpt-step-\d+)?$")


def claims_azure_model(name: str) -> bool:
    """Azure's own fine-tune names. Base names (``gpt-4.1-mini``) are OpenAI's too, and stay OpenAI's."""
    return FINE_TUNE_NAME.match(name) is not None
