"""The conversation list's keyset cursor: the position (created_at, id) of the last item
of a page, opaque to clients. Every ConversationStore encodes and reads it the same way."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import UTC, datetime

from parley.domain.errors import InvalidCursorError

# A cursor this API makes is about 100 characters; anything much longer is not one.
MAX_CURSOR_LENGTH = 200
# A message's seq is a 32-bit integer on PostgreSQL: beyond it, no message can be.
MAX_SEQ = 2**31 - 1


def encode_cursor(created_at: datetime, conversation_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(conversation_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, ident = json.loads(raw)
        created_at = datetime.fromisoformat(created)
        if created_at.tzinfo is None:
            raise ValueError("naive timestamp")
        # Must be a UTC time the database can hold: offsets can push it past year 1 or 9999.
        return created_at.astimezone(UTC), uuid.UUID(ident)
    except (
        binascii.Error,
        ValueError,
        TypeError,
        UnicodeDecodeError,
        OverflowError,
        RecursionError,  # JSON nested past the parser's depth
    ) as exc:
        raise InvalidCursorError() from exc
