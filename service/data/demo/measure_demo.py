"""Measure the demo end to end without the service: base vs LoRA-fine-tuned SmolLM2-135M on the bundled tickets.

Splits support_tickets.jsonl (the last `--test` examples are held out), scores the base model, fine-tunes with the
local trainer, scores the fine-tuned model, and prints the figures with wall times. Run from the repository root:
    python service/data/demo/measure_demo.py --work-dir /tmp/demo
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # the repository root, when run as a script

from service.providers.local import LocalGenerator, LocalTrainParams, train  # noqa: E402

MANIFEST = json.loads((HERE / "manifest.json").read_text())
DEMO_PARAMS = LocalTrainParams.model_validate(MANIFEST["params"])
LABELS: list[str] = MANIFEST["labels"]


def first_label(text: str) -> str | None:
    """The first label word in a free-text answer (a lenient reading that gives the base model every chance)."""
    words = [w.strip(".,:;!?\"'()").lower() for w in text.split()]
    return next((w for w in words if w in LABELS), None)


def accuracy(generator: LocalGenerator, rows: list[dict]) -> tuple[float, float, list[str]]:
    """(exact-match accuracy, lenient first-label accuracy, answers)."""
    prompts = [row["messages"][:-1] for row in rows]
    answers = [g.text.strip() for g in generator.generate(prompts, max_new_tokens=MANIFEST["max_new_tokens"])]
    expected = [row["messages"][-1]["content"] for row in rows]
    exact = sum(a.lower() == e.lower() for a, e in zip(answers, expected, strict=True))
    lenient = sum(first_label(a) == e for a, e in zip(answers, expected, strict=True))
    return exact / len(rows), lenient / len(rows), answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True)
    split = MANIFEST["split"]
    parser.add_argument("--train", type=int, default=split["train"], help="training examples (start of the file)")
    parser.add_argument("--validation", type=int, default=split["validation"])
    parser.add_argument("--test", type=int, default=split["test"], help="held-out examples (end of the file)")
    parser.add_argument("--epochs", type=int, default=DEMO_PARAMS.n_epochs)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    started = time.perf_counter()
    rows = [json.loads(line) for line in (HERE / MANIFEST["dataset"]).read_text().splitlines() if line.strip()]
    test_rows = rows[-args.test :]
    train_rows = rows[: args.train]
    validation_rows = rows[args.train : args.train + args.validation]
    assert len(train_rows) + len(validation_rows) + len(test_rows) <= len(rows), "splits overlap"
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train_rows), ("validation", validation_rows)):
        (work / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    cache = work / "cache"

    t = time.perf_counter()
    base = LocalGenerator("smollm2-135m-instruct", None, cache, args.device)
    base_load = time.perf_counter() - t
    t = time.perf_counter()
    base_accuracy, base_lenient, base_answers = accuracy(base, test_rows)
    base_eval = time.perf_counter() - t
    del base

    params = DEMO_PARAMS.model_copy(update={"n_epochs": args.epochs})
    t = time.perf_counter()
    result = train(
        params,
        base_model="smollm2-135m-instruct",
        train_path=work / "train.jsonl",
        validation_path=work / "validation.jsonl" if validation_rows else None,
        output_dir=work / "run",
        cache_dir=cache,
        device=args.device,
        on_event=lambda e: (
            print(f"  step {e.step}/{e.total_steps} loss {e.train_loss:.3f} {e.tokens_per_second:.0f} tok/s")
            if e.type == "step"
            else print(f"  {e.type}: {getattr(e, 'message', '') or getattr(e, 'validation_loss', '')}")
        ),
    )
    train_time = time.perf_counter() - t

    t = time.perf_counter()
    tuned = LocalGenerator("smollm2-135m-instruct", result.adapter_path, cache, args.device)
    tuned_accuracy, tuned_lenient, tuned_answers = accuracy(tuned, test_rows)
    tuned_eval = time.perf_counter() - t
    total = time.perf_counter() - started

    figures = {
        "train_examples": len(train_rows),
        "test_examples": len(test_rows),
        "base_accuracy": round(base_accuracy, 4),
        "finetuned_accuracy": round(tuned_accuracy, 4),
        "base_first_label_accuracy": round(base_lenient, 4),
        "finetuned_first_label_accuracy": round(tuned_lenient, 4),
        "base_model_load_s": round(base_load, 1),
        "base_eval_s": round(base_eval, 1),
        "train_s": round(train_time, 1),
        "train_steps": result.steps,
        "trained_tokens": result.trained_tokens,
        "final_train_loss": round(result.final_train_loss or 0, 4),
        "final_validation_loss": result.final_validation_loss and round(result.final_validation_loss, 4),
        "padding_share": round(result.padding_share, 4),
        "finetuned_load_and_eval_s": round(tuned_eval, 1),
        "total_s": round(total, 1),
        "cpu_load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "base_answer_samples": base_answers[:5],
        "finetuned_answer_samples": tuned_answers[:5],
    }
    (work / "figures.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
