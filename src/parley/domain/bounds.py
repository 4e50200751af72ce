"""The input Parley takes, in one place: text a database can store and that says something,
and metadata of bounded shape. Every channel goes through these checks (the HTTP schemas
call them as validators, the domain calls them for what arrives over a WebSocket), so a
refusal is the same everywhere and nothing stored can poison a later read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from parley.domain.errors import InvalidInputError

MAX_METADATA_DEPTH = 8  # nested objects and arrays
MAX_METADATA_BYTES = 16_384  # as compact JSON


class InvalidTextError(InvalidInputError):
    code = "invalid_text"


class BlankContentError(InvalidInputError):
    code = "blank_content"

    def __init__(self) -> None:
        super().__init__("content is empty or only whitespace")


class InvalidMetadataError(InvalidInputError):
    code = "invalid_metadata"


def check_text(value: str, field: str = "text") -> str:
    """``value`` unless it holds what no database stores: NUL, or a lone surrogate."""
    if "\x00" in value:
        raise InvalidTextError(f"{field} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidTextError(f"{field} is not valid Unicode (a lone surrogate)") from None
    return value


def check_content(content: str) -> str:
    """A user message: storable text with something in it."""
    check_text(content, "content")
    if not content.strip():
        raise BlankContentError()
    return content


def check_metadata(metadata: Mapping[str, Any]) -> Mapping[str, Any]:
    """Metadata no deeper than ``MAX_METADATA_DEPTH``, no larger than ``MAX_METADATA_BYTES``
    as JSON, finite numbers and storable text only."""
    _check_value(metadata, 1)
    size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise InvalidMetadataError(
            f"metadata is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}"
        )
    return metadata


def _check_value(value: Any, depth: int) -> None:
    if isinstance(value, Mapping | list):
        if depth > MAX_METADATA_DEPTH:
            raise InvalidMetadataError(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels")
        if isinstance(value, Mapping):
            for key, item in value.items():
                check_text(str(key), "metadata key")
                _check_value(item, depth + 1)
        else:
            for item in value:
                _check_value(item, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidMetadataError("metadata numbers must be finite (no NaN or Infinity)")
    elif isinstance(value, str):
        check_text(value, "metadata value")
