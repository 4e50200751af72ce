"""``/v1/keys``: named API keys with a role, for admin keys (``parley keys`` is the same
from a shell). A key's secret is shown once, when it is made."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from parley.api.auth import roles
from parley.api.deps import KeysDep, PrincipalDep
from parley.api.schemas import (
    CallerOut,
    ErrorBody,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyOut,
    KeyUpdate,
    SpendOut,
)
from parley.domain.keys import ApiKey, KeyLimits, Role, Spend

router = APIRouter(prefix="/keys", tags=["keys"])
me = APIRouter(tags=["keys"])

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
    limits = KeyLimits(body.budget_usd, body.budget_period, body.rpm, body.tpm)
    key, secret = await keys.create(body.name, body.role, limits)
    out = _out(key, await keys.spend(key))
    return KeyCreated.model_validate({**out.model_dump(), "secret": secret})


@router.get("/", **roles(Role.ADMIN))
async def list_keys(keys: KeysDep) -> KeyList:
    """Every key, revoked ones too, by name (never a secret), with its spend this period."""
    every = await keys.all()
    spends = await keys.spends(every)
    return KeyList(items=[_out(key, spends[key.name]) for key in every])


@router.get("/{name}", responses=_NOT_FOUND, **roles(Role.ADMIN))
async def get_key(name: str, keys: KeysDep) -> KeyOut:
    """One key (never its secret), with its spend this period."""
    key = await keys.get(name)
    return _out(key, await keys.spend(key))


@router.patch("/{name}", responses=_NOT_FOUND, **roles(Role.ADMIN))
async def update_key(name: str, body: KeyUpdate, keys: KeysDep) -> KeyOut:
    """Change a key's budget or rate limits; null removes one.

    They hold from the key's next request, on every replica. Keys from PARLEY_API_KEYS
    have none to change (404)."""
    key = await keys.update_limits(name, body.model_dump(exclude_unset=True))
    return _out(key, await keys.spend(key))


@router.post("/{name}/revoke", responses=_NOT_FOUND, **roles(Role.ADMIN))
async def revoke_key(name: str, keys: KeysDep) -> KeyOut:
    """Revoke a key: it stops working at once on every replica. Its name stays taken."""
    key = await keys.revoke(name)
    return _out(key, await keys.spend(key))


def _out(key: ApiKey, spend: Spend) -> KeyOut:
    limits = key.limits
    return KeyOut(
        name=key.name,
        role=key.role,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
        budget_usd=limits.budget_usd,
        budget_period=limits.budget_period,
        rpm=limits.rpm,
        tpm=limits.tpm,
        spend=SpendOut(
            usd=spend.usd,
            period_start=spend.period_start,
            resets_at=spend.resets_at,
            remaining_usd=spend.remaining_usd,
        ),
    )


@me.get("/me", **roles(Role.CLIENT, Role.AGENT, Role.ADMIN))
async def whoami(principal: PrincipalDep) -> CallerOut:
    """Who the calling key is: its name and role (the agent console starts here)."""
    return CallerOut(name=principal.name, role=principal.role)
