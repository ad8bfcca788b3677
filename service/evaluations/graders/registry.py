"""The grader registry: spec type -> grader class, plus the catalogue served to clients."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from api_schemas.graders import GraderInfo, GraderSpec
from service.evaluations.graders.base import Grader, GraderConfigError

_REGISTRY: dict[str, type[Grader[Any]]] = {}
_SPEC_ADAPTER: TypeAdapter[Any] = TypeAdapter(GraderSpec)

G = TypeVar("G", bound=type[Grader[Any]])


def register_grader(cls: G) -> G:
    """Class decorator: make a grader available under its spec's ``type``."""
    type_name = cls.spec_type.model_fields["type"].default
    if not isinstance(type_name, str) or not type_name:
        raise TypeError(f"{cls.__name__}.spec_type needs a literal 'type' field with a default")
    existing = _REGISTRY.get(type_name)
    if existing is not None and existing is not cls:
        raise ValueError(f"grader type {type_name!r} is already registered by {existing.__name__}")
    _REGISTRY[type_name] = cls
    return cls


def _ensure_builtins() -> None:
    # Importing the package registers the built-in graders; the import is cheap after the first time.
    import service.evaluations.graders  # noqa: F401


def parse_grader_spec(data: Any) -> Any:
    """A grader spec model from a model or a mapping (raises pydantic's ValidationError with the exact field)."""
    if isinstance(data, Mapping):
        return _SPEC_ADAPTER.validate_python(dict(data))
    return _SPEC_ADAPTER.validate_python(data)


def get_grader(spec: Any, *, chat_client: Any = None, cache: Any = None) -> Grader[Any]:
    """Build the grader for ``spec`` (a spec model or its JSON form).

    LLM judges need ``chat_client`` (an object with the ``ChatClient`` protocol of ``graders.judge``) and use
    ``cache`` (``VerdictCache``) when given, else a private in-memory cache.
    """
    _ensure_builtins()
    try:
        model = parse_grader_spec(spec)
    except ValidationError as exc:
        raise GraderConfigError(f"invalid grader spec: {exc}") from exc
    cls = _REGISTRY.get(model.type)
    if cls is None:
        raise GraderConfigError(f"no grader registered for type {model.type!r}")
    if cls.needs_llm:
        if chat_client is None:
            raise GraderConfigError(f"grader {model.name!r} ({model.type}) calls a judge model and needs a chat client")
        return cls(model, chat_client=chat_client, cache=cache)  # type: ignore[call-arg]
    return cls(model)


def list_graders() -> list[GraderInfo]:
    """Every registered grader type with its description, capability flags and config JSON schema."""
    _ensure_builtins()
    return [
        GraderInfo(
            type=type_name,
            description=cls.description,
            capabilities=cls.capabilities(),
            config_schema=cls.spec_type.model_json_schema(),
        )
        for type_name, cls in sorted(_REGISTRY.items())
    ]
