"""Which answers a review queue shows, in what order, under which labels: a stratified sample drawn with a seed, then
shuffled and blinded.

Strata get items in proportion to their size (largest remainders for the rounding), so per-candidate human figures
over the sample estimate the same quantities as over the whole evaluation. Everything is a function of the seed and
the units given (sorted first), so the same request gives the same queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PAIR_LABELS = ("A", "B")
SINGLE_LABEL = "A"


@dataclass(frozen=True)
class Unit:
    """Something one item shows: an example and the answers (candidate, sample id) to show for it."""

    example_key: str
    stratum: str
    answers: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class BlindItem:
    position: int
    example_key: str
    stratum: str
    sides: list[dict[str, str]]  # {"label", "candidate", "sample_id"}: the hidden mapping


def allocate(sizes: dict[str, int], total: int) -> dict[str, int]:
    """Items per stratum: proportional to its size, rounded by largest remainder (ties by stratum name), capped at the
    stratum's size. ``total`` at least the sum takes every unit."""
    available = sum(sizes.values())
    if total >= available:
        return dict(sizes)
    exact = {s: total * n / available for s, n in sizes.items()}
    out = {s: int(q) for s, q in exact.items()}
    left = total - sum(out.values())
    for s in sorted(exact, key=lambda s: (-(exact[s] - out[s]), s))[:left]:
        out[s] += 1
    return out


def draw(units: Sequence[Unit], size: int, seed: int) -> tuple[list[BlindItem], dict[str, int], dict[str, int]]:
    """The queue's items (stratified sample, shuffled, blinded), items drawn per stratum, and units per stratum."""
    rng = np.random.default_rng(seed)
    by_stratum: dict[str, list[Unit]] = {}
    for unit in sorted(units, key=lambda u: (u.stratum, u.example_key, u.answers)):
        by_stratum.setdefault(unit.stratum, []).append(unit)
    available = {s: len(us) for s, us in by_stratum.items()}
    quotas = allocate(available, size)
    chosen: list[Unit] = []
    for stratum in sorted(by_stratum):
        pool = by_stratum[stratum]
        picks = rng.choice(len(pool), size=quotas[stratum], replace=False) if quotas[stratum] else []
        chosen.extend(pool[int(i)] for i in sorted(picks))
    order = rng.permutation(len(chosen))
    items = [_blind(position, chosen[int(i)], rng) for position, i in enumerate(order)]
    return items, {s: q for s, q in quotas.items() if q}, available


def _blind(position: int, unit: Unit, rng: np.random.Generator) -> BlindItem:
    answers = list(unit.answers)
    if len(answers) == 2 and rng.random() < 0.5:
        # Each pair's sides are drawn anew, so neither candidate sits on a fixed side.
        answers.reverse()
    labels = PAIR_LABELS if len(answers) == 2 else (SINGLE_LABEL,)
    sides = [
        {"label": label, "candidate": candidate, "sample_id": sample_id}
        for label, (candidate, sample_id) in zip(labels, answers, strict=True)
    ]
    return BlindItem(position=position, example_key=unit.example_key, stratum=unit.stratum, sides=sides)
