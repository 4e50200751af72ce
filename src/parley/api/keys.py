"""``/v1/keys``: named API keys with a role, for admin keys (``parley keys`` is the same
from a shell). A key's secret is shown once, when it is made."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from parley.api.auth import roles
from parley.api.deps import KeysDep
from parley.api.schemas import ErrorBody, KeyCreate, KeyCreated, KeyList, KeyOut
from parley.domain.keys import Role

router = APIRouter(prefix="/keys", tags=["keys"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such key"}
}


@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"model": ErrorBody, "description": "The name is (or was) taken"}},
    **roles(Role.ADMIN),
)
async def create_key(body: KeyCreate, keys: KeysDep) -> KeyCreated:
    """Make a key; the answer holds its secret, shown this once (only a digest is kept)."""
    key, secret = await keys.create(body.name, body.role)
    return KeyCreated.model_validate({**KeyOut.model_validate(key).model_dump(), "secret": secret})


@router.get("/", **roles(Role.ADMIN))
async def list_keys(keys: KeysDep) -> KeyList:
    """Every key, revoked ones too, by name (never a secret)."""
    return KeyList(items=[KeyOut.model_validate(key) for key in await keys.list()])


@router.get("/{name}", responses=_NOT_FOUND, **roles(Role.ADMIN))
async def get_key(name: str, keys: KeysDep) -> KeyOut:
    """One key (never its secret)."""
    return KeyOut.model_validate(await keys.get(name))


@router.post("/{name}/revoke", responses=_NOT_FOUND, **roles(Role.ADMIN))
async def revoke_key(name: str, keys: KeysDep) -> KeyOut:
    """Revoke a key: it stops working at once on every replica. Its name stays taken."""
    return KeyOut.model_validate(await keys.revoke(name))
