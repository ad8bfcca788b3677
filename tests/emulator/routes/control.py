"""/_emulator/*: inspection and control for tests (no auth): state, call counters, clock, faults, webhooks."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from ..config import FaultRule
from ..errors import invalid
from .common import core_of, json_body, respond

router = APIRouter(prefix="/_emulator")


def _fault(spec: Any) -> FaultRule:
    if not isinstance(spec, dict):
        raise invalid("A fault rule must be an object with at least 'route' and 'kind'.")
    allowed = {"route", "kind", "count", "probability", "delay_seconds", "retry_after_seconds"}
    unknown = set(spec) - allowed
    if unknown or "route" not in spec or "kind" not in spec:
        raise invalid(f"A fault rule takes 'route' and 'kind' (required) and {sorted(allowed - {'route', 'kind'})}.")
    try:
        return FaultRule(**spec)
    except (TypeError, ValueError) as exc:
        raise invalid(str(exc)) from None


@router.get("/state")
async def state(request: Request) -> Response:
    core = core_of(request)
    core.tick()
    return respond(core.dump())


@router.put("/deployments/{name}")
async def deploy(request: Request, name: str) -> Response:
    """Azure's control plane (ARM) creating a deployment: ``{"model": <base or fine-tuned model>}``."""
    core = core_of(request)
    body = await json_body(request)
    model = body.get("model") if isinstance(body, dict) else None
    if not isinstance(model, str) or core.catalog.resolve(model, core.store) is None:
        raise invalid(f"Cannot deploy {model!r}: no such model.", param="model")
    with core.store.lock:
        core.store.deployments[name] = model
    return respond({"name": name, "model": model, "provisioning_state": "Succeeded"})


@router.get("/calls")
async def calls(request: Request) -> Response:
    return respond(core_of(request).calls())


@router.post("/reset")
async def reset(request: Request) -> Response:
    core_of(request).reset()
    return respond({"reset": True})


@router.get("/clock")
async def clock(request: Request) -> Response:
    core = core_of(request)
    return respond({"now": core.clock.now(), "speed": core.clock.speed})


@router.post("/clock/advance")
async def advance(request: Request) -> Response:
    body = await json_body(request)
    seconds = body.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise invalid("'seconds' must be a number >= 0.", param="seconds")
    return respond({"now": core_of(request).advance(float(seconds))})


@router.post("/run_until_idle")
async def run_until_idle(request: Request) -> Response:
    body = await json_body(request)
    step = body.get("step", 60.0)
    if isinstance(step, bool) or not isinstance(step, int | float) or step <= 0:
        raise invalid("'step' must be a number > 0.", param="step")
    core = core_of(request)
    return respond({"advanced": core.run_until_idle(step=float(step)), "now": core.clock.now()})


@router.get("/faults")
async def list_faults(request: Request) -> Response:
    return respond([rule.to_dict() for rule in core_of(request).faults.rules()])


@router.post("/faults")
async def add_faults(request: Request) -> Response:
    body = await json_body(request)
    specs = body.get("rules", [body])
    if not isinstance(specs, list):
        raise invalid("'rules' must be a list of fault rules.", param="rules")
    rules = [_fault(spec) for spec in specs]
    core = core_of(request)
    for rule in rules:
        core.add_fault(rule)
    return respond([rule.to_dict() for rule in core.faults.rules()])


@router.delete("/faults")
async def clear_faults(request: Request) -> Response:
    core_of(request).faults.clear()
    return respond([])


@router.get("/webhooks")
async def webhooks(request: Request) -> Response:
    return respond([m.to_dict() for m in core_of(request).webhooks.messages()])


@router.post("/webhooks/drain")
async def drain_webhooks(request: Request) -> Response:
    # Delivery does blocking HTTP; keep it off the event loop so a receiver may call back into the emulator.
    messages = await run_in_threadpool(core_of(request).drain_webhooks)
    return respond([{**m.to_dict(), "body": m.body.decode()} for m in messages])


@router.put("/answers")
async def set_answers(request: Request) -> Response:
    body = await json_body(request)
    answers = body.get("correct_answers")
    if not isinstance(answers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in answers.items()):
        raise invalid("'correct_answers' must map prompts to answers (strings).", param="correct_answers")
    core = core_of(request)
    with core.store.lock:
        core.correct_answers = dict(answers)
    return respond({"correct_answers": len(answers)})
