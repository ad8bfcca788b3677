"""Exact, offline token counting for OpenAI's ``o200k_base`` and ``cl100k_base`` encodings.

tiktoken downloads its rank files on first use, which fails on machines without network. The ``bpe-openai`` package
ships the same official rank files (gzipped); we build tiktoken encodings from them after checking their sha256
against the hashes OpenAI publishes, and fall back to tiktoken's own loading (``TIKTOKEN_CACHE_DIR``) only when the
shipped files are missing.

For bulk counting (dataset validation) ``token_counter`` returns a count-only function. Its backends, fastest first:

* ``native``: this package's C counter (``service/_tokcount.c``): the two encodings' split patterns written out as
  matchers, tiktoken's byte-pair merge, a small memo of piece counts; several times faster than the others and a few
  MB of memory. Text it cannot vouch for (code points unassigned in Python's Unicode database, very long pieces) goes
  to the next backend, so its answers are always the reference's;
* ``rust``: the tokenizer compiled into ``bpe-openai`` (the ``bpe`` crate from github/rust-gems, built to reproduce
  tiktoken's output), about twice as fast as tiktoken;
* ``tiktoken``: the reference.

The test suite checks the first two against tiktoken on fuzzed and multilingual text.

Model names resolve to encodings through their base model, fine-tuned (``ft:``) and checkpoint names included:
tiktoken's own ``encoding_for_model`` maps ``ft:gpt-4.1-...`` by prefix to the wrong encoding.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.machinery
import importlib.util
import os
import re
import sys
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, cast

import tiktoken

EncodingName = Literal["o200k_base", "cl100k_base"]
ENCODINGS: tuple[EncodingName, ...] = ("o200k_base", "cl100k_base")
DEFAULT_ENCODING: EncodingName = "o200k_base"

# sha256 of the decompressed official rank files (openaipublic.blob.core.windows.net/encodings/<name>.tiktoken).
ENCODING_SHA256: dict[str, str] = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}

# Text that tokenizers treat as control tokens. A training line containing any of these fails the whole OpenAI job;
# the chat-markup ones are not special in the base encodings but are in the chat models built on them.
SPECIAL_TOKEN_TEXTS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|endofprompt|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|im_sep|>",
)
SPECIAL_TOKEN_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKEN_TEXTS))

# Longest prefix wins; checked after exact names. Sources: openai-notes.md and tiktoken's model table.
_PREFIX_ENCODINGS: tuple[tuple[str, EncodingName], ...] = (
    ("gpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("gpt-oss", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("gpt-35", "cl100k_base"),
    ("davinci-002", "cl100k_base"),
    ("babbage-002", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"),
    ("text-embedding-ada-002", "cl100k_base"),
)


class TokenizerUnavailable(RuntimeError):
    """Neither the shipped rank files nor tiktoken's cache could provide an encoding."""


@dataclass(frozen=True)
class ModelEncoding:
    """How a model name resolved: its base model, the encoding, and whether the encoding was assumed."""

    model: str
    base_model: str
    encoding: EncodingName
    assumed: bool


def base_model_name(model: str) -> str:
    """The base model of a fine-tuned or checkpoint name; other names are returned stripped.

    ``ft:gpt-4.1-mini-2025-04-14:org::abc`` and ``ft:gpt-4.1-mini-2025-04-14:org:sfx:job:ckpt-step-10`` give
    ``gpt-4.1-mini-2025-04-14``; the legacy ``curie:ft-org-2023-01-01`` gives ``curie``; Azure's
    ``gpt-4.1-mini-2025-04-14.ft-0123abcd`` (and its ``:ckpt-step-10``) gives ``gpt-4.1-mini-2025-04-14``.
    """
    name = model.strip()
    if name.startswith("ft:"):
        parts = name.split(":")
        if len(parts) < 2 or not parts[1]:
            raise ValueError(f"fine-tuned model name {model!r} has no base model after 'ft:'")
        return parts[1]
    if ":ft-" in name:
        return name.split(":", 1)[0]
    if ".ft-" in name:
        return name.split(".ft-", 1)[0]
    return name


def resolve_model_encoding(model: str) -> ModelEncoding:
    """Resolve ``model`` (base, ``ft:`` or checkpoint name) to its encoding; unknown models assume ``o200k_base``."""
    if not model or not model.strip():
        raise ValueError("model name is empty")
    base = base_model_name(model)
    lowered = base.lower()
    if lowered in ENCODINGS:
        return ModelEncoding(model, base, cast(EncodingName, lowered), assumed=False)
    best: tuple[int, EncodingName] | None = None
    for prefix, enc in _PREFIX_ENCODINGS:
        if lowered.startswith(prefix) and (best is None or len(prefix) > best[0]):
            best = (len(prefix), enc)
    if best is None:
        return ModelEncoding(model, base, DEFAULT_ENCODING, assumed=True)
    return ModelEncoding(model, base, best[1], assumed=False)


def encoding_for_model(model: str) -> EncodingName:
    """The encoding name for ``model``; see ``resolve_model_encoding`` for whether it was assumed."""
    return resolve_model_encoding(model).encoding


def other_encoding(name: str) -> EncodingName:
    """The other of the two supported encodings (reports count both)."""
    _check_name(name)
    return "cl100k_base" if name == "o200k_base" else "o200k_base"


def _check_name(name: str) -> None:
    if name not in ENCODINGS:
        raise ValueError(f"unsupported encoding {name!r}; expected one of {', '.join(ENCODINGS)}")


def _shipped_rank_file(name: str) -> Path | None:
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"{name}.tiktoken.gz"
    return path if path.is_file() else None


def _parse_ranks(data: bytes) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def load_shipped_ranks(name: str) -> dict[bytes, int] | None:
    """Ranks from the rank file shipped in ``bpe-openai``, hash-checked; None when the file is not installed."""
    _check_name(name)
    path = _shipped_rank_file(name)
    if path is None:
        return None
    data = gzip.decompress(path.read_bytes())
    digest = hashlib.sha256(data).hexdigest()
    if digest != ENCODING_SHA256[name]:
        raise TokenizerUnavailable(
            f"{path} decompresses to sha256 {digest}, not the official {ENCODING_SHA256[name]}; "
            "reinstall bpe-openai or remove the file to use tiktoken's cache"
        )
    return _parse_ranks(data)


def _encoding_spec(name: str, ranks: dict[bytes, int]) -> dict[str, Any]:
    """tiktoken's own constructor for ``name`` (pattern, special tokens) with our ranks in place of the download.

    Calling a copy of the constructor with its ``load_tiktoken_bpe`` replaced keeps the regex and special tokens
    exactly those of the installed tiktoken instead of a second copy here that could drift.
    """
    from tiktoken_ext import openai_public

    ctor = getattr(openai_public, name)

    def loader(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        if expected_hash is not None and expected_hash != ENCODING_SHA256[name]:
            raise TokenizerUnavailable(f"tiktoken expects {name} with sha256 {expected_hash}, we ship another file")
        return ranks

    patched = types.FunctionType(ctor.__code__, {**ctor.__globals__, "load_tiktoken_bpe": loader}, ctor.__name__)
    return cast(dict[str, Any], patched())


# Re-entrant: the native counter is built under it and may load tiktoken (which takes it again) as its fallback.
_encoding_lock = threading.RLock()


@cache
def _get_encoding(name: str) -> tiktoken.Encoding:
    ranks = load_shipped_ranks(name)
    if ranks is not None:
        return tiktoken.Encoding(**_encoding_spec(name, ranks))
    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:
        cache = os.environ.get("TIKTOKEN_CACHE_DIR") or "(TIKTOKEN_CACHE_DIR not set)"
        raise TokenizerUnavailable(
            f"cannot load {name}: bpe-openai's rank files are not installed and tiktoken could not load it "
            f"from its cache {cache} ({exc}). Install bpe-openai or pre-fill TIKTOKEN_CACHE_DIR."
        ) from exc


def get_encoding(name: EncodingName) -> tiktoken.Encoding:
    """A cached tiktoken encoding for ``o200k_base`` or ``cl100k_base`` that works offline."""
    _check_name(name)
    with _encoding_lock:
        return _get_encoding(name)


def _load_rust_bindings() -> types.ModuleType | None:
    """``bpe_openai._bindings`` without running ``bpe_openai/__init__``, which eagerly parses every rank file
    into Python dicts (about half a second and 60 MB we do not need)."""
    existing = sys.modules.get("bpe_openai._bindings")
    if existing is not None:
        return existing
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = folder / f"_bindings{suffix}"
        if path.is_file():
            loader = importlib.machinery.ExtensionFileLoader("bpe_openai._bindings", str(path))
            mod_spec = importlib.util.spec_from_file_location("bpe_openai._bindings", path, loader=loader)
            if mod_spec is None:
                return None
            module = importlib.util.module_from_spec(mod_spec)
            loader.exec_module(module)
            sys.modules["bpe_openai._bindings"] = module
            return module
    return None


Counter = Callable[[str], int]
Backend = Literal["auto", "native", "rust", "tiktoken"]


@cache
def _rust_counter(name: str) -> Counter | None:
    try:
        bindings = _load_rust_bindings()
        if bindings is None or name not in bindings.supported_encodings():
            return None
        return cast(Counter, bindings.tokenizer_for_encoding(name).count)
    except (ImportError, OSError, AttributeError):
        return None


def _tiktoken_counter(name: EncodingName) -> Counter:
    encode = get_encoding(name).encode_ordinary

    def count(text: str) -> int:
        return len(encode(text))

    return count


def _reference_counter(name: EncodingName) -> Counter:
    """bpe-openai's counter when installed, else tiktoken's: what the native counter falls back to."""
    return _rust_counter(name) or _tiktoken_counter(name)


def _lazy_reference_counter(name: EncodingName) -> Counter:
    """The reference counter, loaded on first use: most validations never need it, and bpe-openai's two vocabularies
    are about 90 MB that the native counter spares."""
    loaded: list[Counter] = []

    def count(text: str) -> int:
        if not loaded:
            with _encoding_lock:
                loaded.append(_reference_counter(name))
        try:
            return loaded[0](text)
        except UnicodeEncodeError:
            # Lone surrogates (not valid UTF-8): tiktoken replaces them, as its encode does.
            return _tiktoken_counter(name)(text)

    return count


# Class bits of the native counter's table (the values service/_tokcount.c defines).
_LETTER, _NUMBER, _UPPER, _LOWER, _SPACE, _UNKNOWN = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
# Unicode's White_Space property, which ``\s`` matches in the encodings' patterns (str.isspace differs: it includes
# the information separators U+001C..U+001F).
_WHITE_SPACE = (
    *range(0x09, 0x0E),
    0x20,
    0x85,
    0xA0,
    0x1680,
    *range(0x2000, 0x200B),
    0x2028,
    0x2029,
    0x202F,
    0x205F,
    0x3000,
)


def _category_bits(category: str) -> int:
    bits = 0
    major = category[0]
    if major == "L":
        bits |= _LETTER
        if category in ("Lu", "Lt", "Lm", "Lo"):
            bits |= _UPPER
        if category in ("Ll", "Lm", "Lo"):
            bits |= _LOWER
    elif major == "N":
        bits |= _NUMBER
    elif major == "M":
        bits |= _UPPER | _LOWER
    elif category in ("Cn", "Cs"):
        # Unassigned here may be assigned in the regex engine's (newer) Unicode version; surrogates are not text.
        bits |= _UNKNOWN
    return bits


@cache
def token_classes() -> bytes:
    """One class byte per code point for the native counter, from Python's Unicode database (about 0.2 s)."""
    import unicodedata

    import numpy as np

    chars = np.arange(0x110000, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")
    categories = list(map(unicodedata.category, chars))
    bits = {category: _category_bits(category) for category in set(categories)}
    table = bytearray(map(bits.__getitem__, categories))
    for cp in _WHITE_SPACE:
        table[cp] |= _SPACE
    return bytes(table)


@cache
def _native_counter(name: str) -> Counter | None:
    try:
        from service import _tokcount  # type: ignore[attr-defined]
    except ImportError:
        return None
    ranks = load_shipped_ranks(name)
    if ranks is None:
        ranks = get_encoding(cast(EncodingName, name))._mergeable_ranks
    tokens: list[bytes | None] = [None] * (max(ranks.values()) + 1)
    for token, rank in ranks.items():
        tokens[rank] = token
    kind = 1 if name == "o200k_base" else 0
    native = _tokcount.Counter(kind, tokens, token_classes(), _lazy_reference_counter(cast(EncodingName, name)))
    return cast(Counter, native.count)


def token_counter(name: EncodingName, backend: Backend = "auto") -> Counter:
    """A function counting the tokens of a string, special-token text counted as ordinary text.

    ``auto`` uses the native counter when it is built, else bpe-openai's Rust tokenizer when installed, else tiktoken;
    counts are identical.
    """
    _check_name(name)
    if backend == "tiktoken":
        return _tiktoken_counter(name)
    with _encoding_lock:
        if backend in ("auto", "native"):
            native = _native_counter(name)
            if native is not None:
                return native
            if backend == "native":
                raise TokenizerUnavailable("the native token counter (service._tokcount) is not built")
        counter = _rust_counter(name)
    if counter is not None:
        return counter
    if backend == "rust":
        raise TokenizerUnavailable("the Rust tokenizer of bpe-openai is not installed")
    return _tiktoken_counter(name)


def count_tokens(text: str, encoding: EncodingName = DEFAULT_ENCODING) -> int:
    """Tokens in ``text`` under ``encoding`` (special-token text counted as ordinary text)."""
    return token_counter(encoding)(text)


def find_special_token_text(text: str) -> str | None:
    """The first special-token text in ``text`` (e.g. ``<|endoftext|>``), or None."""
    if "<|" not in text:
        return None
    match = SPECIAL_TOKEN_RE.search(text)
    return match.group() if match else None
