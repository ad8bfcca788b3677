"""Training curves that look like real ones: loss falls towards a floor with seeded noise, accuracy rises."""

from __future__ import annotations

import base64
import csv
import io
import math
import random
from typing import Any

RESULT_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")


def step_metrics(seed: int, step: int, total_steps: int, *, with_validation: bool) -> dict[str, Any]:
    rng = random.Random(f"{seed}:{step}")
    progress = step / max(1, total_steps)
    loss = 0.35 + 1.9 * math.exp(-4.0 * progress) + rng.uniform(-0.08, 0.08)
    loss = max(0.01, loss)
    accuracy = min(0.999, max(0.0, 1.0 - loss / 2.6 + rng.uniform(-0.02, 0.02)))
    data: dict[str, Any] = {
        "step": step,
        "train_loss": round(loss, 5),
        "train_mean_token_accuracy": round(accuracy, 5),
        "total_steps": total_steps,
    }
    if with_validation:
        valid_loss = loss * 1.08 + rng.uniform(0.0, 0.05)
        data["valid_loss"] = round(valid_loss, 5)
        data["valid_mean_token_accuracy"] = round(max(0.0, accuracy - 0.03), 5)
    return data


def full_validation(seed: int, step: int, total_steps: int) -> dict[str, float]:
    """The whole-validation-set figures OpenAI attaches to checkpoints."""
    metrics = step_metrics(seed + 7919, step, total_steps, with_validation=True)
    return {
        "full_valid_loss": metrics["valid_loss"],
        "full_valid_mean_token_accuracy": metrics["valid_mean_token_accuracy"],
    }


def results_csv_base64(rows: list[dict[str, Any]]) -> bytes:
    """The `result_files` content: a CSV of per-step metrics, stored base64-encoded as OpenAI serves it."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    for row in rows:
        writer.writerow(
            [
                row["step"],
                row["train_loss"],
                row["train_mean_token_accuracy"],
                row.get("valid_loss", ""),
                row.get("valid_mean_token_accuracy", ""),
            ]
        )
    return base64.b64encode(out.getvalue().encode())
