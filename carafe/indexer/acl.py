"""Document access control: who may read a document, and who is asking.

Fail closed: a document without an ACL is readable by admins only (unless its
source sets a default), and an empty group list never matches everyone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from carafe.indexer.errors import DocumentRejected


@dataclass(frozen=True, slots=True)
class Acl:
    """Who may read a document: any of ``groups`` or any of ``users``."""

    groups: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    sensitivity: str = "restricted"

    @property
    def admins_only(self) -> bool:
        return not self.groups and not self.users

    def digest(self) -> str:
        """Stable hash, so a sync can tell an ACL-only change from a content change."""
        blob = json.dumps([sorted(self.groups), sorted(self.users), self.sensitivity])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def payload(self) -> dict[str, Any]:
        return {"acl_groups": sorted(self.groups), "acl_users": sorted(self.users), "sensitivity": self.sensitivity}

    @classmethod
    def of_payload(cls, payload: Mapping[str, Any]) -> Acl:
        """The ACL a stored point carries (missing fields read as nobody)."""
        return cls(
            tuple(sorted(payload.get("acl_groups") or ())),
            tuple(sorted(payload.get("acl_users") or ())),
            str(payload.get("sensitivity") or "restricted"),
        )

    def narrowed_to(self, other: Acl) -> Acl:
        """Readable only by those both ACLs admit, labelled with ``other``'s sensitivity: what
        old text may carry once its document's ACL became ``other`` but is not re-embedded yet."""
        groups = tuple(sorted(set(self.groups) & set(other.groups)))
        return Acl(groups, tuple(sorted(set(self.users) & set(other.users))), other.sensitivity)


ADMINS_ONLY = Acl()


@dataclass(frozen=True, slots=True)
class AccessScope:
    """Who is asking, in the indexer's own terms (the gateway maps its Principal here)."""

    user: str
    groups: frozenset[str] = field(default_factory=frozenset)
    unrestricted: bool = False  # admins see every document

    @classmethod
    def of(cls, user: str, groups: Iterable[str] = (), *, admin: bool = False) -> AccessScope:
        return cls(user=user, groups=frozenset(g for g in groups if g), unrestricted=admin)

    def may_read(self, acl: Acl) -> bool:
        """The same rule as the store filter, for tests and reports."""
        if self.unrestricted:
            return True
        return bool(self.groups.intersection(acl.groups)) or (bool(self.user) and self.user in acl.users)


def _names(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise DocumentRejected(f"acl.{what} must be a list of non-empty names, got {value!r}")
    return tuple(sorted({v.strip() for v in value}))


def parse_acl(raw: Any, *, origin: str) -> Acl | None:
    """An :class:`Acl` from a mapping with ``acl: {groups, users}`` and ``sensitivity``.

    Returns None when ``raw`` holds no ACL at all (so a parent default applies)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise DocumentRejected(f"{origin}: expected a mapping with 'acl' and 'sensitivity', got {type(raw).__name__}")
    acl = raw.get("acl")
    sensitivity = raw.get("sensitivity")
    if acl is None and sensitivity is None:
        return None
    if acl is not None and not isinstance(acl, Mapping):
        raise DocumentRejected(f"{origin}: 'acl' must be a mapping with 'groups' and/or 'users'")
    acl = acl or {}
    try:
        groups, users = _names(acl.get("groups"), "groups"), _names(acl.get("users"), "users")
    except DocumentRejected as exc:
        raise DocumentRejected(f"{origin}: {exc.message}") from exc
    if sensitivity is not None and not isinstance(sensitivity, str):
        raise DocumentRejected(f"{origin}: 'sensitivity' must be a string")
    return Acl(groups=groups, users=users, sensitivity=sensitivity or "internal")


def check_known_groups(acl: Acl, known: Iterable[str] | None, *, origin: str) -> None:
    if known is None:
        return
    unknown = sorted(set(acl.groups) - set(known))
    if unknown:
        raise DocumentRejected(f"{origin}: unknown group(s) {', '.join(unknown)} (not in the source's known_groups)")
