"""The LoRA training loop: plain torch (AdamW, linear warmup then decay, accumulation, clipping) for full control of
checkpoints, resume, cancellation and the loss, with no HTTP, database or Celery in sight.

Layout of output_dir: adapter/ (PEFT LoRA, safetensors), merged/ (optional), metrics.jsonl (one event per line),
checkpoints/ (while running or after a cancel), result.json (written last: its presence means the run finished).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
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
from .dpo import PreferencePair, collate_pairs, load_preference_dataset, pair_loss
from .errors import CheckpointMismatchError, LocalTrainingError
from .events import (
    CheckpointSaved,
    StepMetrics,
    TrainEvent,
    TrainMessage,
    TrainResult,
    ValidationMetrics,
)
from .kernels import Kernels, compile_layers, prepare
from .memory import peak_gpu_bytes, peak_rss_bytes, reset_peak
from .modeling import attach_lora, device_batch, loss_sum, resolve_target_modules, supports_logits_to_keep
from .packing import collate, count_targets, padding_share, plan_epoch
from .params import LocalTrainParams, check_method_params
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
from .schedule import plan_training, warmup_linear_decay

RESULT_FILE = "result.json"
METRICS_FILE = "metrics.jsonl"
ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"

log = logging.getLogger(__name__)


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
    method: str = "supervised",
) -> TrainResult:
    """Fine-tune `base_model` with LoRA on a chat JSONL file (``method="dpo"``: on a preference JSONL file, see
    ``dpo``).

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
    try:
        check_method_params(params, method)
    except ValueError as exc:
        raise LocalTrainingError(str(exc)) from None
    source = resolve_base_model(base_model)
    fingerprint = _run_fingerprint(params, source, train_file, method)
    finished = _finished_result(output, fingerprint)
    if finished is not None:
        return finished
    run = _Run(params, source, output, fingerprint, started, on_event or (lambda event: None), method)
    run.setup(device, cache_dir, num_threads)
    run.load_data(train_file, validation_file)
    run.prepare_model()
    cancelled = run.loop(should_stop or (lambda: False))
    return cancelled if cancelled is not None else run.finish()


class _Run:
    """One training run, in the order ``train`` takes its steps: setup (resume state, device, base model), data,
    model (LoRA, optimizer, a checkpoint's state), the loop (with checkpoints and validation), and finish."""

    def __init__(
        self,
        params: LocalTrainParams,
        source: BaseModelSource,
        output: Path,
        fingerprint: str,
        started: float,
        emit: Callable[[TrainEvent], None],
        method: str = "supervised",
    ) -> None:
        self.params, self.source, self.output, self.fingerprint = params, source, output, fingerprint
        self.dpo = method == "dpo"
        self.started, self.emit = started, emit
        self.step, self.tokens, self.target_tokens = 0, 0, 0
        self.last_loss: float | None = None
        self.last_validation: float | None = None
        self.resumed_from: int | None = None

    def report(self, event: Any) -> None:
        self.metrics.write(event)
        self.emit(event)

    # --- setup ------------------------------------------------------------------------------------------------------

    def setup(self, device: str, cache_dir: str | Path, num_threads: int | None) -> None:
        """The checkpoint to resume from (refused when it is another run's), the metrics log cut back to it, the
        device and precision, and the base model."""
        output, source = self.output, self.source
        self.checkpoint = find_latest_checkpoint(output)
        self.resume_state = read_trainer_state(self.checkpoint) if self.checkpoint else None
        if self.resume_state is not None and self.resume_state.get("fingerprint") != self.fingerprint:
            raise CheckpointMismatchError(
                f"{output} holds checkpoints of a different run (other params, data or base model); "
                "use a fresh output_dir or delete its checkpoints folder"
            )
        keep_through = self.resume_state["step"] if self.resume_state else None
        self.metrics = MetricsLog(output / METRICS_FILE, keep_through_step=keep_through)
        dev = self.dev = select_device(device)
        precision, self.dtype = select_precision(self.params.precision, dev)
        self.precision = precision
        threads = configure_threads(num_threads) if dev.type == "cpu" else torch.get_num_threads()
        reset_peak(dev)
        self.loaded = load_base_model(source, cache_dir=Path(cache_dir), device=dev, dtype=self.dtype)
        self.report(
            TrainMessage(
                message=f"Loaded base model {source.spec} in {self.loaded.load_seconds:.1f}s on {dev} ({precision})",
                data={
                    "base_model": source.spec,
                    "kind": source.kind,
                    "converted_now": not self.loaded.from_cache,
                    "load_seconds": round(self.loaded.load_seconds, 3),
                    "device": str(dev),
                    "precision": precision,
                    "cpu_threads": threads,
                },
            )
        )

    # --- data -------------------------------------------------------------------------------------------------------

    def load_data(self, train_file: Path, validation_file: Path | None) -> None:
        """Tokenized examples and the step plan (packed micro-batches per optimizer step)."""
        params = self.params
        self.tokenizer = self.loaded.tokenizer
        encoder = ChatEncoder(self.tokenizer, params.max_seq_length)
        load = load_preference_dataset if self.dpo else load_chat_dataset
        self.train_examples, train_stats = load(train_file, encoder)
        self.validation_examples = load(validation_file, encoder)[0] if validation_file else []
        self.lengths = [len(example) for example in self.train_examples]
        # DPO compares the two sides of a pair row by row: one pair per row, never packed.
        self.plan = plan_training(self.lengths, params.model_copy(update={"packing": False}) if self.dpo else params)
        self.total_steps = len(self.plan)
        self.pad_share = padding_share([mb for step in self.plan for mb in step.micro_batches], self.lengths)
        self.report(
            TrainMessage(
                message=f"Training data: {train_stats.examples} examples, {train_stats.tokens} tokens, "
                f"{self.total_steps} steps, padding {self.pad_share:.1%}",
                data={
                    **train_stats.as_dict(),
                    "validation_examples": len(self.validation_examples),
                    "total_steps": self.total_steps,
                    "padding_share": round(self.pad_share, 4),
                },
            )
        )
        if train_stats.truncated or train_stats.skipped_no_target:
            self.report(
                TrainMessage(
                    level="warning",
                    message=f"{train_stats.truncated} examples truncated to {params.max_seq_length} tokens; "
                    f"{train_stats.skipped_no_target} skipped with no assistant token left to learn",
                    data={"skipped_lines": train_stats.skipped_lines[:100]},
                )
            )

    # --- model ------------------------------------------------------------------------------------------------------

    def prepare_model(self) -> None:
        """LoRA on the base model, the optimizer and schedule, and the checkpoint's state when resuming."""
        params = self.params
        model = self.loaded.model
        self.target_modules = resolve_target_modules(model, params.target_modules)
        # Kernels go in before LoRA wraps the layers (Liger swaps the norms' and MLPs' forward, keeping their Linears).
        # DPO keeps the model as loaded: its rows are unpacked pairs, and its loss needs per-row log-probabilities.
        self.kernels = (
            Kernels(attention=model.config._attn_implementation) if self.dpo else prepare(model, params, self.dev)
        )
        seed_everything(params.seed)
        model = self.model = attach_lora(model, params, self.target_modules, self.source.spec)
        model.train()
        compile_layers(model, self.kernels, params.torch_compile and not self.dpo)
        if self.kernels.notes:
            for note in self.kernels.notes:
                log.info("%s", note)
            self.report(TrainMessage(message="; ".join(self.kernels.notes), data=self.kernels.summary()))
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        # On CUDA, one fused kernel updates every adapter tensor (a LoRA has hundreds of small ones: the per-tensor
        # launches of the default implementation keep a small model's step waiting on the host). CPU keeps the default.
        self.optimizer = torch.optim.AdamW(
            self.trainable,
            lr=params.learning_rate,
            weight_decay=params.weight_decay,
            fused=True if self.dev.type == "cuda" else None,
        )
        warmup_steps = math.ceil(params.warmup_ratio * self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_linear_decay(self.total_steps, warmup_steps)
        )
        self.keep_logits = supports_logits_to_keep(model)
        self.pad_id = int(self.tokenizer.pad_token_id)
        if self.checkpoint is not None and self.resume_state is not None:
            state, rng_state = load_checkpoint(
                self.checkpoint, model=model, optimizer=self.optimizer, scheduler=self.scheduler
            )
            restore_rng_state(rng_state)
            self.step, self.tokens, self.target_tokens = state["step"], state["tokens"], state["target_tokens"]
            self.last_loss, self.last_validation = state.get("train_loss"), state.get("validation_loss")
            self.resumed_from = self.step
            self.report(
                TrainMessage(
                    message=f"Resumed from checkpoint at step {self.step} of {self.total_steps}",
                    data={"step": self.step},
                )
            )

    # --- loop -------------------------------------------------------------------------------------------------------

    def loop(self, stop: Callable[[], bool]) -> TrainResult | None:
        """Train to the last step; the cancelled result when ``stop`` says so (checkpointed at the last finished
        step, whose RNG state was captured before the next step began)."""
        params, plan, dev, dtype = self.params, self.plan, self.dev, self.dtype
        total_steps = self.total_steps
        step_rng = capture_rng_state()
        while self.step < total_steps:
            planned = plan[self.step]
            step_started = time.perf_counter()
            step_targets = sum(count_targets(mb, self.train_examples) for mb in planned.micro_batches)
            # The loss is a mean over the step's assistant tokens (SFT) or its preference pairs (DPO).
            step_norm = sum(len(mb.rows) for mb in planned.micro_batches) if self.dpo else step_targets
            # Summed on the device and read once per step, with the gradient norm: a read is a host-device sync.
            step_loss: torch.Tensor | float = 0.0
            step_tokens, correct, margin = 0, 0.0, 0.0
            for micro_batch in planned.micro_batches:
                if stop():
                    step = self.step
                    latest = find_latest_checkpoint(self.output)
                    if step > 0 and (latest is None or latest.name != f"step-{step}"):
                        self.save(step, step_rng)
                    self.report(TrainMessage(message=f"Cancelled at step {step} of {total_steps}", data={"step": step}))
                    return self.result("cancelled")
                if self.dpo:
                    collated = collate_pairs(micro_batch, self.train_examples, self.pad_id)
                    batch = device_batch(collated, dev)
                    with autocast(dev, dtype):
                        pairs = pair_loss(self.model, batch, params.dpo_beta(), keep_logits=self.keep_logits)
                    batch_loss, correct, margin = pairs.loss, correct + pairs.correct, margin + pairs.margin
                else:
                    width = params.max_seq_length if self.kernels.fixed_width and micro_batch.packed else None
                    collated = collate(micro_batch, self.train_examples, self.pad_id, width=width)
                    batch = device_batch(collated, dev, varlen=self.kernels.varlen and micro_batch.packed)
                    with autocast(dev, dtype):
                        batch_loss = loss_sum(
                            self.model, batch, keep_logits=self.keep_logits, fused_loss=self.kernels.fused_loss
                        )
                (batch_loss / step_norm).backward()
                step_loss = step_loss + batch_loss.detach()
                step_tokens += micro_batch.real_tokens(self.lengths)
            grad_norm_t = torch.nn.utils.clip_grad_norm_(self.trainable, params.max_grad_norm)
            learning_rate = self.scheduler.get_last_lr()[0]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            # One read for both, after the optimizer step is queued (a non-finite loss is refused just below).
            step_loss, grad_norm = torch.stack([torch.as_tensor(step_loss).to(grad_norm_t), grad_norm_t]).tolist()
            self.step += 1
            step = self.step
            step_rng = capture_rng_state()
            self.tokens += step_tokens
            self.target_tokens += step_targets
            self.last_loss = step_loss / step_norm
            if not math.isfinite(self.last_loss):
                raise LocalTrainingError(
                    f"Training loss became {self.last_loss} at step {step}; lower the learning rate"
                )
            duration = time.perf_counter() - step_started
            self.report(
                StepMetrics(
                    step=step,
                    total_steps=total_steps,
                    epoch=planned.epoch + (planned.index_in_epoch + 1) / planned.steps_in_epoch,
                    train_loss=self.last_loss,
                    learning_rate=learning_rate,
                    grad_norm=grad_norm,
                    tokens=self.tokens,
                    target_tokens=self.target_tokens,
                    tokens_per_second=step_tokens / duration if duration > 0 else 0.0,
                    elapsed_s=time.perf_counter() - self.started,
                    peak_gpu_memory_bytes=peak_gpu_bytes(dev),
                    peak_process_rss_bytes=peak_rss_bytes(),
                    reward_accuracy=correct / step_norm if self.dpo else None,
                    reward_margin=margin / step_norm if self.dpo else None,
                )
            )
            if self.validation_examples and params.eval_every_steps and step % params.eval_every_steps == 0:
                self.validate()
            if params.checkpoint_every_steps and step % params.checkpoint_every_steps == 0 and step < total_steps:
                self.save(step, step_rng)
        return None

    def validate(self) -> None:
        args = (self.model, self.validation_examples, self.params, self.pad_id, self.dev, self.dtype, self.keep_logits)
        value, count = evaluate_dpo_loss(*args) if self.dpo else evaluate_loss(*args, kernels=self.kernels)
        self.last_validation = value
        self.report(
            ValidationMetrics(
                step=self.step,
                total_steps=self.total_steps,
                validation_loss=value,
                validation_tokens=count,
                elapsed_s=time.perf_counter() - self.started,
            )
        )

    # --- checkpoint -------------------------------------------------------------------------------------------------

    def trainer_state(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "total_steps": self.total_steps,
            "tokens": self.tokens,
            "target_tokens": self.target_tokens,
            "train_loss": self.last_loss,
            "validation_loss": self.last_validation,
            "base_model": self.source.spec,
        }

    def save(self, at_step: int, rng: dict[str, Any]) -> Path:
        path = save_checkpoint(
            self.output,
            at_step,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            rng_state=rng,
            trainer_state=self.trainer_state(),
            keep=self.params.keep_checkpoints,
        )
        self.report(CheckpointSaved(step=at_step, path=path))
        return path

    # --- finish -----------------------------------------------------------------------------------------------------

    def result(self, status: str, **paths: Path | None) -> TrainResult:
        latest = find_latest_checkpoint(self.output)
        return TrainResult(
            status=status,
            base_model=self.source.spec,
            device=str(self.dev),
            precision=self.precision,
            steps=self.step,
            total_steps=self.total_steps,
            trained_tokens=self.tokens,
            target_tokens=self.target_tokens,
            final_train_loss=self.last_loss,
            final_validation_loss=self.last_validation,
            wall_time_s=time.perf_counter() - self.started,
            padding_share=self.pad_share,
            target_modules=self.target_modules,
            adapter_path=paths.get("adapter"),
            merged_path=paths.get("merged"),
            metrics_path=self.metrics.path,
            checkpoint_path=latest,
            resumed_from_step=self.resumed_from,
            peak_gpu_memory_bytes=peak_gpu_bytes(self.dev),
            peak_process_rss_bytes=peak_rss_bytes(),
        )

    def finish(self) -> TrainResult:
        """A last validation unless the last step had one, the adapter (and merged model) saved whole, checkpoints
        removed, and the result written for a re-delivered task to find."""
        params, output, model, tokenizer = self.params, self.output, self.model, self.tokenizer
        if self.validation_examples and not (params.eval_every_steps and self.step % params.eval_every_steps == 0):
            self.validate()
        model.peft_config["default"].base_model_name_or_path = self.source.spec
        adapter_path = _save_folder(
            output / ADAPTER_DIR,
            # Embeddings are never trained (see checkpoints.save_checkpoint): no base-config lookup, no warning.
            lambda tmp: (model.save_pretrained(tmp, save_embedding_layers=False), tokenizer.save_pretrained(tmp)),
        )
        merged_path = None
        if params.merge_adapter:
            merged = model.merge_and_unload()
            merged_path = _save_folder(
                output / MERGED_DIR, lambda tmp: (merged.save_pretrained(tmp), tokenizer.save_pretrained(tmp))
            )
        remove_checkpoints(output)
        final = self.result("succeeded", adapter=adapter_path, merged=merged_path)
        atomic_write_text(
            output / RESULT_FILE,
            json.dumps({"fingerprint": self.fingerprint, **final.model_dump(mode="json")}, indent=2),
        )
        last_loss, last_validation = self.last_loss, self.last_validation
        self.report(
            TrainMessage(
                message=f"Training finished: {self.step} steps, train loss {last_loss:.4f}"
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
    *,
    kernels: Kernels | None = None,
) -> tuple[float, int]:
    """Mean loss over the assistant tokens of `examples` (dropout off, training RNG untouched), batched as training
    batches them for the run's attention `kernels`."""
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
                width = params.max_seq_length if kernels and kernels.fixed_width and micro_batch.packed else None
                collated = collate(micro_batch, examples, pad_id, width=width)
                batch = device_batch(collated, device, varlen=bool(kernels and kernels.varlen and micro_batch.packed))
                with autocast(device, dtype):
                    total += float(loss_sum(model, batch, keep_logits=keep_logits))
                count += count_targets(micro_batch, examples)
    finally:
        model.train(was_training)
    return total / max(1, count), count


def evaluate_dpo_loss(
    model: Any,
    pairs: Sequence[PreferencePair],
    params: LocalTrainParams,
    pad_id: int,
    device: torch.device,
    dtype: torch.dtype,
    keep_logits: bool,
) -> tuple[float, int]:
    """Mean DPO loss over preference pairs (dropout off, training RNG untouched), and the answer tokens it read."""
    batches = plan_epoch(
        [len(pair) for pair in pairs],
        batch_size=params.batch_size,
        max_seq_length=params.max_seq_length,
        packing=False,
        seed=params.seed,
        epoch=0,
        shuffle=False,
    )
    total = 0.0
    was_training = model.training
    model.eval()
    try:
        with preserved_rng(device), torch.no_grad():
            for micro_batch in batches:
                batch = device_batch(collate_pairs(micro_batch, pairs, pad_id), device)
                with autocast(device, dtype):
                    total += float(pair_loss(model, batch, params.dpo_beta(), keep_logits=keep_logits).loss)
    finally:
        model.train(was_training)
    return total / max(1, len(pairs)), sum(pair.n_targets for pair in pairs)


def _run_fingerprint(params: LocalTrainParams, source: BaseModelSource, train_file: Path, method: str) -> str:
    identity: dict[str, Any] = {
        "params": params.trajectory_fingerprint(),
        "base_model": [source.kind, source.location],
        "train_sha256": file_sha256(train_file),
    }
    if method != "supervised":  # left out for SFT, so runs recorded before methods existed keep their fingerprint
        identity["method"] = method
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
