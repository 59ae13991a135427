"""The people and groups the company's IdP provisions through SCIM 2.0.

A user the directory knows is judged by it: deactivated (``active: false``) or
deleted means no access, whatever token or key they hold; their groups are the
directory's, so removing a member narrows what they may read at once (each replica
re-reads within ``state.cache_ttl_s``).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from carafe.errors import Conflict, NotFound
from carafe.state import records
from carafe.state.database import Database
from carafe.state.schema import DirectoryGroup, DirectoryUser, GroupMember


@dataclass(frozen=True, slots=True)
class Person:
    id: str
    user_name: str
    active: bool
    external_id: str | None = None
    display_name: str | None = None
    groups: tuple[str, ...] = ()  # display names


@dataclass(frozen=True, slots=True)
class Group:
    id: str
    display_name: str
    external_id: str | None
    members: tuple[str, ...]  # user ids


class Directory:
    """SCIM's Users and Groups, stored; every change leaves an admin-action record."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # reading -------------------------------------------------------------------
    def person(self, user_name: str) -> Person | None:
        """The directory's view of ``user_name`` (None: not provisioned here)."""
        with self.db.transaction() as s:
            row = s.scalars(select(DirectoryUser).where(DirectoryUser.user_name == user_name)).first()
            return _person(s, row) if row is not None else None

    def user(self, user_id: str) -> Person:
        with self.db.transaction() as s:
            return _person(s, _user_row(s, user_id))

    def users(self, user_name: str | None = None) -> list[Person]:
        with self.db.transaction() as s:
            q = select(DirectoryUser).order_by(DirectoryUser.user_name)
            if user_name is not None:
                q = q.where(DirectoryUser.user_name == user_name)
            return [_person(s, r) for r in s.scalars(q)]

    def group(self, group_id: str) -> Group:
        with self.db.transaction() as s:
            return _group(s, _group_row(s, group_id))

    def groups(self, display_name: str | None = None) -> list[Group]:
        with self.db.transaction() as s:
            q = select(DirectoryGroup).order_by(DirectoryGroup.display_name)
            if display_name is not None:
                q = q.where(DirectoryGroup.display_name == display_name)
            return [_group(s, r) for r in s.scalars(q)]

    # users -----------------------------------------------------------------------
    def put_user(
        self,
        user_name: str,
        *,
        active: bool = True,
        user_id: str | None = None,
        external_id: str | None = None,
        display_name: str | None = None,
        actor: str = "scim",
    ) -> Person:
        """Create (no ``user_id``) or replace a user."""
        with self.db.transaction() as s:
            if user_id is None:
                if s.scalars(select(DirectoryUser).where(DirectoryUser.user_name == user_name)).first():
                    raise Conflict(f"user {user_name!r} already exists", param="userName", code="uniqueness")
                row = DirectoryUser(id=uuid.uuid4().hex, user_name=user_name)
                s.add(row)
            else:
                row = _user_row(s, user_id)
                row.user_name = user_name
            row.active, row.external_id, row.display_name = active, external_id, display_name
            row.updated_at = time.time()
            s.flush()
            records.record(s, actor, "directory.user.put", user_name, active=active)
            return _person(s, row)

    def set_active(self, user_id: str, active: bool, *, actor: str = "scim") -> Person:
        with self.db.transaction() as s:
            row = _user_row(s, user_id)
            row.active, row.updated_at = active, time.time()
            records.record(s, actor, "directory.user.active", row.user_name, active=active)
            return _person(s, row)

    def delete_user(self, user_id: str, *, actor: str = "scim") -> None:
        with self.db.transaction() as s:
            row = _user_row(s, user_id)
            s.execute(delete(GroupMember).where(GroupMember.user_id == user_id))
            s.delete(row)
            records.record(s, actor, "directory.user.delete", row.user_name)

    # groups ----------------------------------------------------------------------
    def put_group(
        self,
        display_name: str,
        members: list[str],
        *,
        group_id: str | None = None,
        external_id: str | None = None,
        actor: str = "scim",
    ) -> Group:
        """Create (no ``group_id``) or replace a group and its member list (user ids)."""
        with self.db.transaction() as s:
            if group_id is None:
                if s.scalars(select(DirectoryGroup).where(DirectoryGroup.display_name == display_name)).first():
                    raise Conflict(f"group {display_name!r} already exists", param="displayName", code="uniqueness")
                row = DirectoryGroup(id=uuid.uuid4().hex, display_name=display_name)
                s.add(row)
            else:
                row = _group_row(s, group_id)
                row.display_name = display_name
            row.external_id, row.updated_at = external_id, time.time()
            s.flush()
            _set_members(s, row.id, members)
            records.record(s, actor, "directory.group.put", display_name, members=len(members))
            return _group(s, row)

    def change_members(self, group_id: str, add: list[str], remove: list[str], *, actor: str = "scim") -> Group:
        with self.db.transaction() as s:
            row = _group_row(s, group_id)
            current = set(_member_ids(s, group_id))
            _set_members(s, group_id, sorted((current | set(add)) - set(remove)))
            row.updated_at = time.time()
            records.record(s, actor, "directory.group.members", row.display_name, added=add, removed=remove)
            return _group(s, row)

    def delete_group(self, group_id: str, *, actor: str = "scim") -> None:
        with self.db.transaction() as s:
            row = _group_row(s, group_id)
            s.execute(delete(GroupMember).where(GroupMember.group_id == group_id))
            s.delete(row)
            records.record(s, actor, "directory.group.delete", row.display_name)


def _user_row(s: Session, user_id: str) -> DirectoryUser:
    row = s.get(DirectoryUser, user_id)
    if row is None:
        raise NotFound(f"no user with id {user_id!r}", param="id")
    return row


def _group_row(s: Session, group_id: str) -> DirectoryGroup:
    row = s.get(DirectoryGroup, group_id)
    if row is None:
        raise NotFound(f"no group with id {group_id!r}", param="id")
    return row


def _member_ids(s: Session, group_id: str) -> list[str]:
    return list(s.scalars(select(GroupMember.user_id).where(GroupMember.group_id == group_id)))


def _set_members(s: Session, group_id: str, user_ids: list[str]) -> None:
    known = set(s.scalars(select(DirectoryUser.id).where(DirectoryUser.id.in_(user_ids)))) if user_ids else set()
    unknown = sorted(set(user_ids) - known)
    if unknown:
        raise NotFound(f"no user with id {unknown[0]!r} (group members must be provisioned users)", param="members")
    s.execute(delete(GroupMember).where(GroupMember.group_id == group_id))
    s.add_all(GroupMember(group_id=group_id, user_id=u) for u in sorted(known))


def _person(s: Session, row: DirectoryUser) -> Person:
    q = select(DirectoryGroup.display_name).join(GroupMember, GroupMember.group_id == DirectoryGroup.id)
    names = tuple(sorted(s.scalars(q.where(GroupMember.user_id == row.id))))
    return Person(row.id, row.user_name, row.active, row.external_id, row.display_name, names)


def _group(s: Session, row: DirectoryGroup) -> Group:
    return Group(row.id, row.display_name, row.external_id, tuple(sorted(_member_ids(s, row.id))))
