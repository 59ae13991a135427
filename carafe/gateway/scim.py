"""SCIM 2.0 (RFC 7643/7644) ``/scim/v2/Users`` and ``/scim/v2/Groups``: the
company's IdP provisions and deprovisions people and groups here, with the bearer
token ``auth.scim_token``. A deactivated user, or a member removed from a group,
loses that access on every replica within ``state.cache_ttl_s``.

Routes run in FastAPI's thread pool (they write to the state database).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from carafe.errors import CarafeError, Conflict, InvalidInput, NotFound, Unauthenticated
from carafe.gateway.auth import bootstrap_matches
from carafe.gateway.deps import bearer, get_state
from carafe.state import Directory, Group, Person

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
MEDIA = "application/scim+json"
_EQ = re.compile(r'^\s*(userName|displayName)\s+eq\s+"([^"]*)"\s*$', re.IGNORECASE)
_MEMBER = re.compile(r'^members\[value eq "([^"]+)"\]$')
T = TypeVar("T")


def scim_directory(request: Request) -> Directory:
    """The directory, for a caller holding ``auth.scim_token`` (401 otherwise; 404 when SCIM is off)."""
    state = get_state(request)
    token = state.config.auth.scim_token
    if token is None:
        raise NotFound("SCIM is not enabled (set auth.scim_token)")
    if not bootstrap_matches(bearer(request) or "", token.get_secret_value()):
        raise Unauthenticated("SCIM needs 'Authorization: Bearer <auth.scim_token>'", code="invalid_token")
    return state.store.directory


router = APIRouter(prefix="/scim/v2", tags=["scim"])
Dir = Depends(scim_directory)


def _reply(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=MEDIA)


def _scim(call: Callable[[], T], status: int = 200) -> Response:
    """Run a directory call; errors become SCIM error bodies (RFC 7644 §3.12)."""
    try:
        result = call()
    except CarafeError as exc:
        code = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, Conflict) else 400
        extra = {"scimType": "uniqueness"} if code == 409 else {}
        return _reply({"schemas": [ERROR_SCHEMA], "status": str(code), "detail": exc.message, **extra}, code)
    if result is None:
        return Response(status_code=204)
    return _reply(_resource(result), status)


def _resource(item: object) -> dict[str, Any]:
    if isinstance(item, Person):
        return {
            "schemas": [USER_SCHEMA],
            "id": item.id,
            "userName": item.user_name,
            "externalId": item.external_id,
            "displayName": item.display_name,
            "active": item.active,
            "groups": [{"display": g} for g in item.groups],
            "meta": {"resourceType": "User"},
        }
    if isinstance(item, Group):
        return {
            "schemas": [GROUP_SCHEMA],
            "id": item.id,
            "displayName": item.display_name,
            "externalId": item.external_id,
            "members": [{"value": m} for m in item.members],
            "meta": {"resourceType": "Group"},
        }
    assert isinstance(item, list)
    resources = [_resource(i) for i in item]
    return {"schemas": [LIST_SCHEMA], "totalResults": len(resources), "itemsPerPage": len(resources),
            "startIndex": 1, "Resources": resources}  # fmt: skip


def _filter(value: str | None, attribute: str) -> str | None:
    if not value:
        return None
    m = _EQ.match(value)
    if m is None or m.group(1).lower() != attribute.lower():
        raise InvalidInput(f'only the filter {attribute} eq "..." is supported', param="filter")
    return m.group(2)


# Users --------------------------------------------------------------------------
@router.get("/Users")
def list_users(filter: str | None = None, directory: Directory = Dir) -> Response:
    return _scim(lambda: directory.users(_filter(filter, "userName")))


@router.post("/Users")
def create_user(body: dict[str, Any], directory: Directory = Dir) -> Response:
    return _scim(lambda: directory.put_user(**_user_fields(body)), 201)


@router.get("/Users/{user_id}")
def get_user(user_id: str, directory: Directory = Dir) -> Response:
    return _scim(lambda: directory.user(user_id))


@router.put("/Users/{user_id}")
def replace_user(user_id: str, body: dict[str, Any], directory: Directory = Dir) -> Response:
    return _scim(lambda: directory.put_user(**_user_fields(body), user_id=user_id))


@router.patch("/Users/{user_id}")
def patch_user(user_id: str, body: dict[str, Any], directory: Directory = Dir) -> Response:
    def apply() -> Person:
        active = None
        for op in _operations(body):
            value = op.get("value")
            if str(op.get("path", "")).lower() == "active":
                active = _bool(value)
            elif isinstance(value, dict) and "active" in value:
                active = _bool(value["active"])
        if active is None:
            raise InvalidInput("only replacing `active` is supported by PATCH", param="Operations")
        return directory.set_active(user_id, active)

    return _scim(apply)


@router.delete("/Users/{user_id}")
def delete_user(user_id: str, directory: Directory = Dir) -> Response:
    return _scim(lambda: directory.delete_user(user_id))


# Groups -------------------------------------------------------------------------
@router.get("/Groups")
def list_groups(filter: str | None = None, directory: Directory = Dir) -> Response:
    return _scim(lambda: directory.groups(_filter(filter, "displayName")))


@router.post("/Groups")
def create_group(body: dict[str, Any], directory: Directory = Dir) -> Response:
    return _scim(lambda: directory.put_group(**_group_fields(body)), 201)


@router.get("/Groups/{group_id}")
def get_group(group_id: str, directory: Directory = Dir) -> Response:
    return _scim(lambda: directory.group(group_id))


@router.put("/Groups/{group_id}")
def replace_group(group_id: str, body: dict[str, Any], directory: Directory = Dir) -> Response:
    return _scim(lambda: directory.put_group(**_group_fields(body), group_id=group_id))


@router.patch("/Groups/{group_id}")
def patch_group(group_id: str, body: dict[str, Any], directory: Directory = Dir) -> Response:
    def apply() -> Group:
        add: list[str] = []
        remove: list[str] = []
        for op in _operations(body):
            kind, path = str(op.get("op", "")).lower(), str(op.get("path", ""))
            member = _MEMBER.match(path)
            if kind == "remove" and member:
                remove.append(member.group(1))
            elif path == "members" and kind in ("add", "remove"):
                (add if kind == "add" else remove).extend(_member_values(op.get("value")))
            else:
                raise InvalidInput(f"unsupported PATCH operation {kind} {path!r} on a group", param="Operations")
        return directory.change_members(group_id, add, remove)

    return _scim(apply)


@router.delete("/Groups/{group_id}")
def delete_group(group_id: str, directory: Directory = Dir) -> Response:
    return _scim(lambda: directory.delete_group(group_id))


# bodies -------------------------------------------------------------------------
def _user_fields(body: dict[str, Any]) -> dict[str, Any]:
    name = body.get("userName")
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("a SCIM user needs userName", param="userName")
    display = body.get("displayName") or (body.get("name") or {}).get("formatted")
    return {"user_name": name.strip(), "active": _bool(body.get("active", True)),
            "external_id": body.get("externalId"), "display_name": display}  # fmt: skip


def _group_fields(body: dict[str, Any]) -> dict[str, Any]:
    name = body.get("displayName")
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("a SCIM group needs displayName", param="displayName")
    members = _member_values(body.get("members") or [])
    return {"display_name": name.strip(), "members": members, "external_id": body.get("externalId")}


def _operations(body: dict[str, Any]) -> list[dict[str, Any]]:
    ops = body.get("Operations")
    if not isinstance(ops, list) or not all(isinstance(o, dict) for o in ops):
        raise InvalidInput("a PATCH needs Operations (a list)", param="Operations")
    return ops


def _member_values(value: object) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [str(v["value"]) for v in items if isinstance(v, dict) and v.get("value")]


def _bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)
