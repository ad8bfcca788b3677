"""Which model a name means: a base model (or its alias), a fine-tuned model, or a fine-tuned checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import ModelSpec
from .store import Store


@dataclass(frozen=True)
class ResolvedModel:
    id: str
    spec: ModelSpec
    fine_tuned: bool
    created: int
    owned_by: str
    checkpoint: bool = False

    def to_api(self) -> dict[str, Any]:
        # Fine-tuned models serve until their base model shuts down, so they carry the base's date.
        return {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": self.owned_by,
            "shutdown_date": self.spec.shutdown_date,
        }


class Catalog:
    def __init__(self, specs: list[ModelSpec]) -> None:
        self.specs = list(specs)
        self._by_name: dict[str, ModelSpec] = {}
        for spec in self.specs:
            self._by_name[spec.id] = spec
            for alias in spec.aliases:
                self._by_name[alias] = spec

    def base(self, name: str) -> ModelSpec | None:
        return self._by_name.get(name)

    def resolve(self, name: str, store: Store) -> ResolvedModel | None:
        spec = self.base(name)
        if spec is not None:
            return ResolvedModel(id=spec.id, spec=spec, fine_tuned=False, created=spec.created, owned_by=spec.owned_by)
        tuned = store.fine_tuned_models.get(name)
        if tuned is None:
            return None
        return ResolvedModel(
            id=tuned.id,
            spec=tuned.base,
            fine_tuned=True,
            created=tuned.created,
            owned_by=tuned.owned_by,
            checkpoint=tuned.checkpoint,
        )

    def listed(self, store: Store) -> list[ResolvedModel]:
        """What `GET /v1/models` shows: base snapshots and aliases, then fine-tuned models (not checkpoints)."""
        out: list[ResolvedModel] = []
        for spec in self.specs:
            for name in (spec.id, *spec.aliases):
                out.append(
                    ResolvedModel(id=name, spec=spec, fine_tuned=False, created=spec.created, owned_by=spec.owned_by)
                )
        for tuned in store.fine_tuned_models.values():
            if not tuned.checkpoint:
                out.append(
                    ResolvedModel(
                        id=tuned.id, spec=tuned.base, fine_tuned=True, created=tuned.created, owned_by=tuned.owned_by
                    )
                )
        return out
