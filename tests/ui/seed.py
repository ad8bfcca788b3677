"""Project data for the UI tests, written through the domain: datasets validated by the real checks, a running job
with the metrics events a provider reports, and an evaluation whose samples are summarised by the real statistics."""

from __future__ import annotations

import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import Session

from service.clock import utcnow
from service.datasets import service as datasets
from service.db import get_engine
from service.evaluations.models import Evaluation, EvaluationSample
from service.evaluations.summary import summarize_evaluation
from service.jobs.models import Job, JobCheckpoint, JobEvent

SCRIPT_ANSWER = '<script>document.title="pwned"</script>billing'

# (reference, base answer, fine-tuned answer): examples 1, 3 and 6 flip towards the fine-tune, 4 against it.
ANSWERS = [
    ("billing", "billing", "billing"),
    ("account", "it is about the account page", "account"),
    ("billing", "billing", "billing"),
    ("refund", "billing issue", "refund"),
    ("account", "account", "the account settings"),
    ("billing", "billing", "billing"),
    ("refund", "a refund request for the order", "refund"),
    ("billing", SCRIPT_ANSWER, SCRIPT_ANSWER),
]


@dataclass
class Seeded:
    project_id: str
    valid_dataset_id: str
    invalid_dataset_id: str
    job_id: str
    evaluation_id: str
    train_steps: list[int]
    valid_steps: list[int]
    flipped: list[int]


def _upload(session: Session, settings: Any, project_id: str, name: str, content: bytes, tmp: Path) -> str:
    from service.datasets.storage import stage_file

    src = tmp / name
    src.write_bytes(content)
    ds, _ = datasets.create_from_staged(session, settings, project_id, stage_file(settings, src), filename=name)
    return ds.id


def chat_line(user: str, answer: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]})


def add_metrics(settings: Any, job_id: str, steps: range, *, valid_every: int = 5) -> tuple[list[int], list[int]]:
    """Metrics events as a provider reports them while training: train loss every step, validation loss every few."""
    train, valid = [], []
    with Session(get_engine(settings)) as session:
        for step in steps:
            data: dict[str, Any] = {"step": step, "train_loss": round(2.5 / (1 + 0.15 * step), 4)}
            train.append(step)
            if step % valid_every == 0:
                data["valid_loss"] = round(2.7 / (1 + 0.12 * step), 4)
                valid.append(step)
            session.add(JobEvent(job_id=job_id, source="provider", type="metrics", message=f"step {step}", data=data))
        session.commit()
    return train, valid


def finish_job(settings: Any, job_id: str, fine_tuned_model: str) -> None:
    with Session(get_engine(settings)) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.status, job.fine_tuned_model, job.finished_at = "succeeded", fine_tuned_model, utcnow()
        session.add(job)
        session.commit()


def seed_project(settings: Any, project_id: str, *, n_steps: int = 20) -> Seeded:
    tmp = Path(tempfile.mkdtemp(dir=settings.data_dir))
    with Session(get_engine(settings), expire_on_commit=False) as session:
        valid_lines = [chat_line(f"Ticket {i}: my invoice {1000 + i} is wrong", "billing") for i in range(12)]
        valid_id = _upload(
            session, settings, project_id, "tickets.jsonl", ("\n".join(valid_lines) + "\n").encode(), tmp
        )
        bad_lines = [
            chat_line("fine", "ok"),
            json.dumps({"messages": [{"role": "user", "content": "no answer"}]}),
            json.dumps({"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "x"}]}),
            "{not json",
        ]
        invalid_id = _upload(session, settings, project_id, "broken.jsonl", ("\n".join(bad_lines) + "\n").encode(), tmp)
        job = Job(
            project_id=project_id,
            provider="local",
            base_model="smollm2-135m-instruct",
            method={"type": "supervised", "hyperparameters": {"n_epochs": 1}},
            training_dataset_id=valid_id,
            status="running",
            fine_tuned_model=None,
            started_at=utcnow(),
        )
        session.add(job)
        session.flush()
        session.add(JobEvent(job_id=job.id, source="service", type="status", message="training started"))
        session.add(JobCheckpoint(job_id=job.id, step=10, model=f"{job.id}:ckpt-step-10", metrics={"train_loss": 1.0}))
        evaluation = Evaluation(
            project_id=project_id,
            status="succeeded",
            dataset_id=valid_id,
            config={
                "mode": "realtime",
                "candidates": [
                    {"kind": "model", "name": "base", "provider": "local", "model": "smollm2-135m-instruct"},
                    {"kind": "model", "name": "fine-tuned", "provider": "local", "model": "smollm2-135m-instruct"},
                ],
                "graders": [{"type": "exact_match", "name": "exact"}],
                "baseline": "base",
                "confidence": 0.95,
                "seed": 0,
            },
            finished_at=utcnow(),
        )
        session.add(evaluation)
        session.flush()
        for i, (reference, base, tuned) in enumerate(ANSWERS):
            prompt = [{"role": "user", "content": f"Ticket {i}: classify this"}]
            for name, answer in (("base", base), ("fine-tuned", tuned)):
                session.add(
                    EvaluationSample(
                        evaluation_id=evaluation.id,
                        candidate=name,
                        example_key=f"test:{i}",
                        split="test",
                        example_index=i,
                        input=prompt,
                        reference=reference,
                        output=answer,
                        ok=True,
                        latency_s=0.1,
                        input_tokens=10,
                        output_tokens=2,
                    )
                )
        session.commit()
        ids = (job.id, evaluation.id)
    train, valid = add_metrics(settings, ids[0], range(1, n_steps + 1))
    # In a thread of its own: the summary runs its own event loop, and a Playwright page already runs one here.
    with ThreadPoolExecutor(1) as pool:
        results = pool.submit(summarize_evaluation, ids[1], settings).result()
    with Session(get_engine(settings)) as session:
        row = session.get(Evaluation, ids[1])
        assert row is not None
        row.summary = results
        session.add(row)
        session.commit()
    flipped = [i for i, (ref, a, b) in enumerate(ANSWERS) if (a == ref) != (b == ref)]
    return Seeded(project_id, valid_id, invalid_id, ids[0], ids[1], train, valid, flipped)
