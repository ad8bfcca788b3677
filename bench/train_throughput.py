"""Training throughput of the local trainer against a bare PyTorch loop and a Liger-kernel loop, on the same batches.

All sides use the same base model, LoRA config and seed, the same packed micro-batches in the same order and the
same number of optimizer steps. `bare` is the textbook loop (HF `labels=` loss, backward, clip, AdamW step); `liger` is
that loop with Liger's kernels patched in (fused linear cross-entropy, RMSNorm, RoPE, SwiGLU): the tuned reference on
a GPU, skipped with the reason elsewhere. Each side runs in its own process (Liger patches transformers' modules for
the whole process; peak memory is per side), and rounds alternate the sides so that a busy machine slows all alike.
Throughput counts real (non-padding) tokens per second over the steps after warm-up, by wall time and by the
process's CPU time (which other processes on a shared machine disturb less). Printed per side: tokens/s,
MFU (4 x non-embedding parameters per token, LoRA fwd+bwd) against the stated peak of the GPU and against the
matmul ceiling measured here, and peak memory (CUDA: max allocated; every device: the side's peak RSS). Also the
share of token slots spent on padding with packing, with length bucketing, and with naive batching in file order.

Models are the GPU kit's random-init shapes (bench/kit_shapes.py), or any model folder with --model:

    python bench/train_throughput.py                                  # smol135m (random init) on the demo data, CPU
    python bench/train_throughput.py --shape tiny --steps 20          # seconds, for a smoke run
    python bench/train_throughput.py --shape smol1.7b --batch-size 4 --max-seq-length 2048 --repeat-data 40   # GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from bench.kit_shapes import SHAPES, build_shape, flops_per_token  # noqa: E402
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


def bench_model(name: str) -> BaseModelSource:
    """The model to measure, resolved here: the bench runs as the operator, so a model folder or file it is given is
    its own model directory (the service lets projects name only those configured in FINETUNE_LOCAL_MODEL_DIRS)."""
    path = Path(name).expanduser()
    return resolve_base_model(name, model_dirs=[path.resolve().parent] if path.exists() else [])


def trainer_side(
    args: argparse.Namespace, params: LocalTrainParams, work: Path, round_: int, *, cpu: list[float] | None = None
) -> tuple[float, int]:
    """Tokens/s of `train()` over the steps after warm-up: wall time between its step events, so whatever it does
    between steps (metrics, RNG capture) counts as the bare loop's whole step does. `cpu` gets the process CPU
    seconds of those steps."""
    steps: list[Any] = []
    cpu_at: list[float] = []

    def on_event(event: Any) -> None:
        if event.type == "step":
            steps.append(event)
            cpu_at.append(time.process_time())

    output = work / f"trainer-{Path(args.model).name}-{round_}"
    shutil.rmtree(output, ignore_errors=True)  # a finished run there would be returned, not trained again
    train(
        params,
        base_model=bench_model(args.model),
        train_path=args.data,
        validation_path=None,
        output_dir=output,
        cache_dir=work / "cache",
        device=args.device,
        on_event=on_event,
        num_threads=args.threads,
    )
    if not args.warmup:
        raise SystemExit("--warmup must be at least 1 (the first step's start is measured from the step before)")
    first, last = steps[args.warmup - 1], steps[-1]
    tokens = last.tokens - first.tokens
    if cpu is not None:
        cpu.append(cpu_at[-1] - cpu_at[args.warmup - 1])
    return tokens / (last.elapsed_s - first.elapsed_s), tokens


def bare_side(
    args: argparse.Namespace, params: LocalTrainParams, work: Path, *, cpu: list[float] | None = None
) -> tuple[float, int, float]:
    """Tokens/s of a plain loop on the very same batches; also returns model FLOPs per real token. `cpu` gets the
    process CPU seconds of the measured steps."""
    device = select_device(args.device)
    _, dtype = select_precision(params.precision, device)
    configure_threads(args.threads) if device.type == "cpu" else None
    loaded = load_base_model(bench_model(args.model), cache_dir=work / "cache", device=device, dtype=dtype)
    examples, _ = load_chat_dataset(args.data, ChatEncoder(loaded.tokenizer, params.max_seq_length))
    plan = plan_training([len(e) for e in examples], params)
    model = loaded.model
    targets = resolve_target_modules(model, params.target_modules)
    per_token = flops_per_token(model.config)
    seed_everything(params.seed)
    model = attach_lora(model, params, targets, args.model)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=params.learning_rate, weight_decay=params.weight_decay)
    total = len(plan)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear_decay(total, round(0.05 * total)))
    pad_id = int(loaded.tokenizer.pad_token_id)
    tokens, seconds, cpu_seconds = 0, 0.0, 0.0
    for index, step in enumerate(plan):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started, cpu_started = time.perf_counter(), time.process_time()
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
            cpu_seconds += time.process_time() - cpu_started
    if cpu is not None:
        cpu.append(cpu_seconds)
    return tokens / seconds, tokens, per_token


def liger_unavailable(device: torch.device) -> str | None:
    """Why the Liger side cannot run here, or None."""
    if device.type != "cuda":
        return f"Liger's kernels are Triton kernels for CUDA; this run is on {device.type}"
    try:
        import liger_kernel  # noqa: F401
    except ImportError:
        return "liger-kernel is not installed (pip install '.[gpu]')"
    return None


def liger_side(
    args: argparse.Namespace, params: LocalTrainParams, work: Path, *, cpu: list[float] | None = None
) -> tuple[float, int, float]:
    """The bare loop with Liger's kernels patched into transformers' modules for this process (the GPU kit's way)."""
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(args.model).model_type
    MODEL_TYPE_TO_APPLY_LIGER_FN[model_type]()
    return bare_side(args, params, work, cpu=cpu)


def matmul_ceiling_tflops(device: torch.device, threads: int) -> float:
    """The device's dense matmul rate, measured (bf16 8192^3 on CUDA as the kit does; fp32 1024^3 on CPU with the
    sides' thread count): the best of several timings, as a busy machine only ever makes one slower."""
    if device.type == "cpu":
        torch.set_num_threads(threads)
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn_like(a)
    a @ b
    best = float("inf")
    for _ in range(10):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e12


def run_side(args: argparse.Namespace, params: LocalTrainParams, work: Path, side: str, round_: int) -> dict[str, Any]:
    """One side in this process (the child a round starts): its rate and its peak memory."""
    device = select_device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cpu: list[float] = []
    if side == "trainer":
        rate, tokens = trainer_side(args, params, work, round_, cpu=cpu)
    else:
        rate, tokens, _ = (liger_side if side == "liger" else bare_side)(args, params, work, cpu=cpu)
    return {
        "side": side,
        "tok_s": rate,
        "tokens": tokens,
        "tok_per_cpu_s": tokens / cpu[0] if cpu and cpu[0] > 0 else None,
        "peak_gpu_bytes": int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def spawn_side(args: argparse.Namespace, side: str, round_: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child-side", side, "--child-round", str(round_)]
    for name, value in vars(args).items():
        if name.startswith("child_") or value is None or value is False or name == "shape":
            continue
        command += [f"--{name.replace('_', '-')}"] + ([] if value is True else [str(value)])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{side} side failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


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
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smol135m", help="the GPU kit's random-init shapes")
    parser.add_argument("--model", default=None, help="a model folder or alias instead of --shape")
    parser.add_argument("--tiny", action="store_true", help="the same as --shape tiny")
    parser.add_argument("--data", type=Path, default=DEMO_DATA)
    parser.add_argument(
        "--repeat-data", type=int, default=1, help="repeat the data file (long rows need many examples)"
    )
    parser.add_argument("--steps", type=int, default=5, help="measured optimizer steps per side and round")
    parser.add_argument("--warmup", type=int, default=1, help="steps run before measuring (at least 1)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sides", default="trainer,bare,liger", help="comma-separated: trainer, bare, liger")
    parser.add_argument("--batch-size", type=int, default=1, help="packed rows per step")
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--attention", default="auto", help="the trainer's attention (LocalTrainParams.attention)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="the trainer's gradient checkpointing")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's stated bf16 peak, for MFU")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--child-side", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-round", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    params = LocalTrainParams(
        batch_size=args.batch_size,
        max_seq_length=args.max_seq_length,
        max_steps=args.warmup + args.steps,
        lora_dropout=0.0,
        eval_every_steps=0,
        checkpoint_every_steps=0,
        packing=True,
        attention=args.attention,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    if args.child_side:
        print(json.dumps(run_side(args, params, args.work_dir, args.child_side, args.child_round)), flush=True)
        return

    work = args.work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="train-throughput-"))
    # Fixed once so all sides run on the same number of threads whatever the machine's load does meanwhile.
    args.threads = args.threads or idle_cpus()
    if args.model is None:
        shape = "tiny" if args.tiny else args.shape
        args.model = str(build_shape(shape, work / "models" / shape, work / "cache"))
    if args.repeat_data > 1:
        lines = [line for line in args.data.read_text().splitlines() if line.strip()]
        repeated = work / "data.jsonl"
        repeated.write_text("".join(line + "\n" for line in lines * args.repeat_data))
        args.data = repeated
    device = select_device(args.device)
    sides = [side.strip() for side in args.sides.split(",") if side.strip()]
    skipped = liger_unavailable(device) if "liger" in sides else None
    if skipped:
        sides.remove("liger")
    print(
        f"model {args.model} | device {device} | {args.threads} CPU thread(s) | {args.steps} measured steps x "
        f"{args.rounds} rounds | {args.batch_size} packed row(s) of {args.max_seq_length} tokens per step"
    )
    if skipped:
        print(f"liger side skipped: {skipped}")
    results: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for round_ in range(args.rounds):
        for side in sides:
            results[side].append(spawn_side(args, side, round_))
        counts = {results[side][-1]["tokens"] for side in sides}
        assert len(counts) == 1, counts  # the very same batches on every side
        print(
            f"round {round_ + 1}: "
            + " | ".join(
                f"{s} {results[s][-1]['tok_s']:8.1f} tok/s, {results[s][-1]['tok_per_cpu_s'] or 0:8.1f} tok/CPU-s"
                for s in sides
            )
        )

    from transformers import AutoConfig

    per_token = flops_per_token(AutoConfig.from_pretrained(args.model))
    ceiling = matmul_ceiling_tflops(device, args.threads)
    stated = args.peak_tflops
    if stated is None and device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        stated = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    rates = {side: statistics.median(r["tok_s"] for r in results[side]) for side in sides}
    print(
        f"MFU: 4 x {per_token / 4 / 1e6:.1f}M non-embedding params per token; stated peak "
        + (f"{stated:.0f} TFLOP/s" if stated else "none (pass --peak-tflops)")
        + f"; matmul ceiling measured here {ceiling:.2f} TFLOP/s"
    )
    for side in sides:
        achieved = rates[side] * per_token / 1e12
        gpu = max((r["peak_gpu_bytes"] or 0) for r in results[side])
        rss = max(r["peak_rss_bytes"] for r in results[side])
        mfu = f"MFU {achieved / stated:6.1%} | " if stated else ""
        print(
            f"{side:8s} {rates[side]:9.1f} tok/s (median) | {achieved:8.3f} TFLOP/s | {mfu}"
            f"{achieved / ceiling:6.1%} of the matmul ceiling | "
            + (f"peak GPU {gpu / 2**30:.2f} GiB | " if device.type == "cuda" else "")
            + f"peak RSS {rss / 2**30:.2f} GiB"
        )
    # Ratios within a round, then their median: a machine whose load drifts between rounds moves both sides alike.
    for other, target in (("bare", "target >= 0.90x on CPU"), ("liger", "target >= 1.0x on the GPU")):
        if "trainer" in rates and other in rates:
            for key, unit in (("tok_s", "wall"), ("tok_per_cpu_s", "CPU time")):
                paired = [t[key] / o[key] for t, o in zip(results["trainer"], results[other], strict=True)]
                print(
                    f"trainer / {other:5s} {statistics.median(paired):6.2f}x by {unit} (median of rounds: "
                    + ", ".join(f"{r:.2f}" for r in paired)
                    + f"; {target})"
                )
    pads = padding_report(args, params, work)
    print(
        f"padding share: packed {pads['packed']:.1%} | length-bucketed {pads['bucketed']:.1%} | naive file order "
        f"{pads['naive']:.1%} (unpacked batches of {pads['examples_per_unpacked_batch']} examples)"
    )


if __name__ == "__main__":
    main()
