"""Request-body checks with OpenAI's wording (`Invalid 'seed': integer above maximum value...`)."""

from __future__ import annotations

from typing import Any

from .errors import invalid, missing, wrong_type

METADATA_MAX_PAIRS = 16
METADATA_MAX_KEY = 64
METADATA_MAX_VALUE = 512


def reject_unknown(body: dict[str, Any], allowed: set[str]) -> None:
    for key in body:
        if key not in allowed:
            raise invalid(f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter")


def required_str(body: dict[str, Any], key: str) -> str:
    if key not in body or body[key] is None:
        raise missing(key)
    value = body[key]
    if not isinstance(value, str):
        raise wrong_type(key, "a string", value)
    if not value:
        raise invalid(
            f"Invalid '{key}': empty string. Expected a string with minimum length 1, but got an empty string instead.",
            param=key,
            code="empty_string",
        )
    return value


def optional_str(body: dict[str, Any], key: str, *, min_len: int = 0, max_len: int | None = None) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise wrong_type(key, "a string", value)
    check_length(key, value, min_len=min_len, max_len=max_len)
    return value


def check_length(param: str, value: str, *, min_len: int = 0, max_len: int | None = None) -> None:
    if len(value) < min_len:
        raise invalid(
            f"Invalid '{param}': string too short. Expected a string with minimum length {min_len}, "
            f"but got a string with length {len(value)} instead.",
            param=param,
            code="string_below_min_length",
        )
    if max_len is not None and len(value) > max_len:
        raise invalid(
            f"Invalid '{param}': string too long. Expected a string with maximum length {max_len}, "
            f"but got a string with length {len(value)} instead.",
            param=param,
            code="string_above_max_length",
        )


def int_in_range(param: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(param, "an integer", value)
    if low is not None and value < low:
        raise invalid(
            f"Invalid '{param}': integer below minimum value. Expected a value >= {low}, but got {value} instead.",
            param=param,
            code="integer_below_min_value",
        )
    if high is not None and value > high:
        raise invalid(
            f"Invalid '{param}': integer above maximum value. Expected a value <= {high}, but got {value} instead.",
            param=param,
            code="integer_above_max_value",
        )
    return value


def number_in_range(
    param: str, value: Any, *, low: float | None = None, high: float | None = None, low_exclusive: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong_type(param, "a number", value)
    if low is not None and (value <= low if low_exclusive else value < low):
        bound = f"> {low}" if low_exclusive else f">= {low}"
        raise invalid(
            f"Invalid '{param}': number below minimum value. Expected a value {bound}, but got {value} instead.",
            param=param,
            code="decimal_below_min_value",
        )
    if high is not None and value > high:
        raise invalid(
            f"Invalid '{param}': number above maximum value. Expected a value <= {high}, but got {value} instead.",
            param=param,
            code="decimal_above_max_value",
        )
    return float(value)


def one_of(param: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        listed = (
            ", ".join(f"'{c}'" for c in choices[:-1]) + f", and '{choices[-1]}'" if len(choices) > 1 else choices[0]
        )
        raise invalid(f"Invalid value: '{value}'. Supported values are: {listed}.", param=param, code="invalid_value")
    return value


def metadata(body: dict[str, Any], key: str = "metadata") -> dict[str, str] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise wrong_type(key, "an object", value)
    if len(value) > METADATA_MAX_PAIRS:
        raise invalid(
            f"Invalid '{key}': too many properties. Expected an object with at most {METADATA_MAX_PAIRS} properties, "
            f"but got an object with {len(value)} properties instead.",
            param=key,
            code="object_above_max_properties",
        )
    for k, v in value.items():
        if len(k) > METADATA_MAX_KEY:
            raise invalid(
                f"Invalid '{key}': too long key. Expected keys of at most {METADATA_MAX_KEY} characters, "
                f"but got a key with length {len(k)} instead.",
                param=f"{key}.{k}",
                code="string_above_max_length",
            )
        if not isinstance(v, str):
            raise wrong_type(f"{key}.{k}", "a string", v)
        check_length(f"{key}.{k}", v, max_len=METADATA_MAX_VALUE)
    return dict(value)


def auto_or_int(param: str, value: Any, *, low: int, high: int) -> int | str:
    if value == "auto":
        return "auto"
    return int_in_range(param, value, low=low, high=high)


def auto_or_number(
    param: str, value: Any, *, low: float, high: float | None = None, low_exclusive: bool = True
) -> float | str:
    if value == "auto":
        return "auto"
    return number_in_range(param, value, low=low, high=high, low_exclusive=low_exclusive)
