"""The run's schedule, fixed up front by the seed: which micro-batches each optimizer step trains on, and the
learning-rate factor of each step (the schedule needs the step count; resuming needs the order)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .packing import MicroBatch, group_steps, plan_epoch
from .params import LocalTrainParams


@dataclass(frozen=True)
class PlannedStep:
    epoch: int
    index_in_epoch: int
    steps_in_epoch: int
    micro_batches: list[MicroBatch]


def plan_training(lengths: Sequence[int], params: LocalTrainParams) -> list[PlannedStep]:
    """Every optimizer step of the run, fixed up front by the seed (the schedule needs the count; resume needs order)."""
    steps: list[PlannedStep] = []
    for epoch in range(params.n_epochs):
        batches = plan_epoch(
            lengths,
            batch_size=params.batch_size,
            max_seq_length=params.max_seq_length,
            packing=params.packing,
            seed=params.seed,
            epoch=epoch,
        )
        grouped = group_steps(batches, params.gradient_accumulation_steps)
        steps.extend(PlannedStep(epoch, i, len(grouped), group) for i, group in enumerate(grouped))
    return steps[: params.max_steps] if params.max_steps else steps


def warmup_linear_decay(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR factor for step s (0-based): rises linearly over the warmup, then falls linearly to reach 0 after the end."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor
