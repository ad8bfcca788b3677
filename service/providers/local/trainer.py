"""The LoRA training loop: plain torch (AdamW, linear warmup then decay, accumulation, clipping) for full control of
checkpoints, resume, cancellation and the loss, with no HTTP, database or Celery in sight.

Layout of output_dir: adapter/ (PEFT LoRA, safetensors), merged/ (optional), metrics.jsonl (one event per line),
checkpoints/ (while running or after a cancel), result.json (written last: its presence means the run finished).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from .base_models import BaseModelSource, file_sha256, load_base_model, resolve_base_model
from .chat_data import ChatEncoder, TokenizedExample, load_chat_dataset
from .checkpoints import (
    atomic_write_text,
    find_latest_checkpoint,
    load_checkpoint,
    read_trainer_state,
    remove_checkpoints,
    save_checkpoint,
)
from .errors import CheckpointMismatchError, LocalTrainingError
from .events import (
    CheckpointSaved,
    StepMetrics,
    TrainEvent,
    TrainMessage,
    TrainResult,
    ValidationMetrics,
)
from .modeling import attach_lora, loss_sum, resolve_target_modules, supports_logits_to_keep
from .packing import MicroBatch, collate, count_targets, group_steps, padding_share, plan_epoch
from .params import LocalTrainParams
from .runtime import (
    autocast,
    capture_rng_state,
    configure_threads,
    preserved_rng,
    restore_rng_state,
    seed_everything,
    select_device,
    select_precision,
)

RESULT_FILE = "result.json"
METRICS_FILE = "metrics.jsonl"
ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"


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


class MetricsLog:
    """metrics.jsonl; on resume it is cut back to what was true at the checkpoint, so replayed steps are not doubled."""

    def __init__(self, path: Path, *, keep_through_step: int | None):
        self.path = path
        kept: list[str] = []
        if keep_through_step is not None and path.is_file():
            for line in path.read_text().splitlines():
                try:
                    step = json.loads(line).get("step")
                except json.JSONDecodeError:
                    break  # a line torn by the kill: everything after it is unreliable too
                if isinstance(step, int) and step > keep_through_step:
                    break
                kept.append(line)
        atomic_write_text(path, "".join(line + "\n" for line in kept))

    def write(self, event: Any) -> None:
        record = {"time": datetime.now(UTC).isoformat(), **event.model_dump(mode="json")}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def train(
    params: LocalTrainParams,
    *,
    base_model: str,
    train_path: str | Path,
    validation_path: str | Path | None = None,
    output_dir: str | Path,
    cache_dir: str | Path,
    device: str = "auto",
    on_event: Callable[[TrainEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    num_threads: int | None = None,
) -> TrainResult:
    """Fine-tune `base_model` with LoRA on a chat JSONL file.

    Resumes from the latest checkpoint in `output_dir` when there is one (same params, data and base model, else
    CheckpointMismatchError); returns the stored result at once when `output_dir` holds a finished identical run.
    `should_stop` is polled before every micro-batch: when it returns True the state of the last finished step is
    checkpointed and a result with status 'cancelled' is returned. Exceptions raised by `on_event` propagate (the run
    then resumes from its last periodic checkpoint next time).
    """
    started = time.perf_counter()
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    train_file, validation_file = Path(train_path), Path(validation_path) if validation_path else None
    for path in (train_file, validation_file):
        if path is not None and not path.is_file():
            raise LocalTrainingError(f"Dataset file not found: {path}")
    source = resolve_base_model(base_model)
    fingerprint = _run_fingerprint(params, source, train_file)
    finished = _finished_result(output, fingerprint)
    if finished is not None:
        return finished

    emit = on_event or (lambda event: None)
    stop = should_stop or (lambda: False)
    checkpoint = find_latest_checkpoint(output)
    resume_state = read_trainer_state(checkpoint) if checkpoint else None
    if resume_state is not None and resume_state.get("fingerprint") != fingerprint:
        raise CheckpointMismatchError(
            f"{output} holds checkpoints of a different run (other params, data or base model); "
            "use a fresh output_dir or delete its checkpoints folder"
        )
    metrics = MetricsLog(output / METRICS_FILE, keep_through_step=resume_state["step"] if resume_state else None)

    def report(event: Any) -> None:
        metrics.write(event)
        emit(event)

    dev = select_device(device)
    precision, dtype = select_precision(params.precision, dev)
    threads = configure_threads(num_threads) if dev.type == "cpu" else torch.get_num_threads()
    loaded = load_base_model(source, cache_dir=Path(cache_dir), device=dev, dtype=dtype)
    report(
        TrainMessage(
            message=f"Loaded base model {source.spec} in {loaded.load_seconds:.1f}s on {dev} ({precision})",
            data={
                "base_model": source.spec,
                "kind": source.kind,
                "converted_now": not loaded.from_cache,
                "load_seconds": round(loaded.load_seconds, 3),
                "device": str(dev),
                "precision": precision,
                "cpu_threads": threads,
            },
        )
    )
    tokenizer = loaded.tokenizer
    encoder = ChatEncoder(tokenizer, params.max_seq_length)
    train_examples, train_stats = load_chat_dataset(train_file, encoder)
    validation_examples = load_chat_dataset(validation_file, encoder)[0] if validation_file else []
    lengths = [len(example) for example in train_examples]
    plan = plan_training(lengths, params)
    total_steps = len(plan)
    pad_share = padding_share([mb for step in plan for mb in step.micro_batches], lengths)
    report(
        TrainMessage(
            message=f"Training data: {train_stats.examples} examples, {train_stats.tokens} tokens, "
            f"{total_steps} steps, padding {pad_share:.1%}",
            data={
                **train_stats.as_dict(),
                "validation_examples": len(validation_examples),
                "total_steps": total_steps,
                "padding_share": round(pad_share, 4),
            },
        )
    )
    if train_stats.truncated or train_stats.skipped_no_target:
        report(
            TrainMessage(
                level="warning",
                message=f"{train_stats.truncated} examples truncated to {params.max_seq_length} tokens; "
                f"{train_stats.skipped_no_target} skipped with no assistant token left to learn",
                data={"skipped_lines": train_stats.skipped_lines[:100]},
            )
        )

    model = loaded.model
    target_modules = resolve_target_modules(model, params.target_modules)
    seed_everything(params.seed)
    model = attach_lora(model, params, target_modules, source.spec)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=params.learning_rate, weight_decay=params.weight_decay)
    warmup_steps = math.ceil(params.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear_decay(total_steps, warmup_steps))
    keep_logits = supports_logits_to_keep(model)
    pad_id = int(tokenizer.pad_token_id)

    step, tokens, target_tokens = 0, 0, 0
    last_loss: float | None = None
    last_validation: float | None = None
    resumed_from: int | None = None
    if checkpoint is not None and resume_state is not None:
        resume_state, rng_state = load_checkpoint(checkpoint, model=model, optimizer=optimizer, scheduler=scheduler)
        restore_rng_state(rng_state)
        step, tokens, target_tokens = resume_state["step"], resume_state["tokens"], resume_state["target_tokens"]
        last_loss, last_validation = resume_state.get("train_loss"), resume_state.get("validation_loss")
        resumed_from = step
        report(TrainMessage(message=f"Resumed from checkpoint at step {step} of {total_steps}", data={"step": step}))

    def trainer_state() -> dict[str, Any]:
        return {
            "fingerprint": fingerprint,
            "total_steps": total_steps,
            "tokens": tokens,
            "target_tokens": target_tokens,
            "train_loss": last_loss,
            "validation_loss": last_validation,
            "base_model": source.spec,
        }

    def checkpoint_now(at_step: int, rng: dict[str, Any]) -> Path:
        path = save_checkpoint(
            output,
            at_step,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            rng_state=rng,
            trainer_state=trainer_state(),
            keep=params.keep_checkpoints,
        )
        report(CheckpointSaved(step=at_step, path=path))
        return path

    def validate() -> None:
        nonlocal last_validation
        value, count = evaluate_loss(model, validation_examples, params, pad_id, dev, dtype, keep_logits)
        last_validation = value
        report(
            ValidationMetrics(
                step=step,
                total_steps=total_steps,
                validation_loss=value,
                validation_tokens=count,
                elapsed_s=time.perf_counter() - started,
            )
        )

    def result(status: str, **paths: Path | None) -> TrainResult:
        latest = find_latest_checkpoint(output)
        return TrainResult(
            status=status,
            base_model=source.spec,
            device=str(dev),
            precision=precision,
            steps=step,
            total_steps=total_steps,
            trained_tokens=tokens,
            target_tokens=target_tokens,
            final_train_loss=last_loss,
            final_validation_loss=last_validation,
            wall_time_s=time.perf_counter() - started,
            padding_share=pad_share,
            target_modules=target_modules,
            adapter_path=paths.get("adapter"),
            merged_path=paths.get("merged"),
            metrics_path=metrics.path,
            checkpoint_path=latest,
            resumed_from_step=resumed_from,
        )

    step_rng = capture_rng_state()
    while step < total_steps:
        planned = plan[step]
        step_started = time.perf_counter()
        step_targets = sum(count_targets(mb, train_examples) for mb in planned.micro_batches)
        step_loss, step_tokens = 0.0, 0
        for micro_batch in planned.micro_batches:
            if stop():
                # Parameters are those of the last finished step; its RNG state was captured before this step began.
                latest = find_latest_checkpoint(output)
                if step > 0 and (latest is None or latest.name != f"step-{step}"):
                    checkpoint_now(step, step_rng)
                report(TrainMessage(message=f"Cancelled at step {step} of {total_steps}", data={"step": step}))
                return result("cancelled")
            batch = {key: value.to(dev) for key, value in collate(micro_batch, train_examples, pad_id).items()}
            with autocast(dev, dtype):
                batch_loss = loss_sum(model, batch, keep_logits=keep_logits)
            (batch_loss / step_targets).backward()
            step_loss += float(batch_loss.detach())
            step_tokens += micro_batch.real_tokens(lengths)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, params.max_grad_norm))
        learning_rate = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        step_rng = capture_rng_state()
        tokens += step_tokens
        target_tokens += step_targets
        last_loss = step_loss / step_targets
        if not math.isfinite(last_loss):
            raise LocalTrainingError(f"Training loss became {last_loss} at step {step}; lower the learning rate")
        duration = time.perf_counter() - step_started
        report(
            StepMetrics(
                step=step,
                total_steps=total_steps,
                epoch=planned.epoch + (planned.index_in_epoch + 1) / planned.steps_in_epoch,
                train_loss=last_loss,
                learning_rate=learning_rate,
                grad_norm=grad_norm,
                tokens=tokens,
                target_tokens=target_tokens,
                tokens_per_second=step_tokens / duration if duration > 0 else 0.0,
                elapsed_s=time.perf_counter() - started,
            )
        )
        if validation_examples and params.eval_every_steps and step % params.eval_every_steps == 0:
            validate()
        if params.checkpoint_every_steps and step % params.checkpoint_every_steps == 0 and step < total_steps:
            checkpoint_now(step, step_rng)

    if validation_examples and not (params.eval_every_steps and step % params.eval_every_steps == 0):
        validate()
    model.peft_config["default"].base_model_name_or_path = source.spec
    adapter_path = _save_folder(
        output / ADAPTER_DIR, lambda tmp: (model.save_pretrained(tmp), tokenizer.save_pretrained(tmp))
    )
    merged_path = None
    if params.merge_adapter:
        merged = model.merge_and_unload()
        merged_path = _save_folder(
            output / MERGED_DIR, lambda tmp: (merged.save_pretrained(tmp), tokenizer.save_pretrained(tmp))
        )
    remove_checkpoints(output)
    final = result("succeeded", adapter=adapter_path, merged=merged_path)
    atomic_write_text(
        output / RESULT_FILE, json.dumps({"fingerprint": fingerprint, **final.model_dump(mode="json")}, indent=2)
    )
    report(
        TrainMessage(
            message=f"Training finished: {step} steps, train loss {last_loss:.4f}"
            + (f", validation loss {last_validation:.4f}" if last_validation is not None else ""),
            data={"adapter_path": str(adapter_path), "wall_time_s": round(final.wall_time_s, 2)},
        )
    )
    return final


def evaluate_loss(
    model: Any,
    examples: Sequence[TokenizedExample],
    params: LocalTrainParams,
    pad_id: int,
    device: torch.device,
    dtype: torch.dtype,
    keep_logits: bool,
) -> tuple[float, int]:
    """Mean loss over the assistant tokens of `examples` (dropout off, training RNG untouched)."""
    batches = plan_epoch(
        [len(e) for e in examples],
        batch_size=params.batch_size,
        max_seq_length=params.max_seq_length,
        packing=params.packing,
        seed=params.seed,
        epoch=0,
        shuffle=False,
    )
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with preserved_rng(device), torch.no_grad():
            for micro_batch in batches:
                batch = {key: value.to(device) for key, value in collate(micro_batch, examples, pad_id).items()}
                with autocast(device, dtype):
                    total += float(loss_sum(model, batch, keep_logits=keep_logits))
                count += count_targets(micro_batch, examples)
    finally:
        model.train(was_training)
    return total / max(1, count), count


def _run_fingerprint(params: LocalTrainParams, source: BaseModelSource, train_file: Path) -> str:
    identity = {
        "params": params.trajectory_fingerprint(),
        "base_model": [source.kind, source.location],
        "train_sha256": file_sha256(train_file),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _finished_result(output: Path, fingerprint: str) -> TrainResult | None:
    """A finished run's result (a re-delivered task must not train twice), if output_dir holds the same run."""
    path = output / RESULT_FILE
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    if stored.pop("fingerprint", None) != fingerprint:
        raise CheckpointMismatchError(f"{output} already holds a finished run with other params, data or base model")
    result = TrainResult.model_validate(stored)
    if result.adapter_path is None or not Path(result.adapter_path).is_dir():
        return None
    return result


def _save_folder(final: Path, write: Callable[[str], Any]) -> Path:
    """Write a folder whole under a temporary name, then swap it in."""
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        write(str(tmp))
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
