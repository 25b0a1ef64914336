"""The search page's and `/api/search`'s question: the form's fields as a search on the message index.

The fields are the command line's (`mailwarden trace`): sender and recipient (an address, `@domain`
or `*part*`), the period (`2h`, `7d` ago or an ISO time, UTC), status, reason, ref, Message-ID and
client address or network. Each is checked on its own, so the page can say which field is wrong.
The account's scope (`Principal.scope`) becomes the index query's `allowed_domains`: a customer's
search never reaches past its domains, whatever else it asks. Results come from the index alone
(one row per message and recipient), never from the messages' events, so a page of a large store
costs what a page of a small one does.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated, Final

from fastapi import Query

from mailwarden.refs import is_ref, normalize
from mailwarden.timespec import TimeSpecError, parse_time
from mailwarden.trace.model import STATUSES
from mailwarden.trace.search import AddressFilter, SearchSpec, parse_cursor
from mailwarden.web.scope import Principal

PAGE_SIZE: Final = 50
MAX_PAGE: Final = 500
MAX_FIELD: Final = 200
FIELDS: Final = ("sender", "recipient", "since", "until", "status", "reason", "ref", "message_id", "client")
DEFAULT_SINCE: Final = "1d"  # the search page opened without a question shows the last day
_ADDRESS: Final = "an address (a@b.test), a domain (@b.test) or a part (*bob*)"
_TIME: Final = "ago (30m, 2h, 7d) or an ISO time (2026-11-28T10:00; UTC without an offset)"
_STATUS: Final = f"^({'|'.join(STATUSES)})?$"
_CURSOR: Final = r"^([0-9]+_\S+)?$"


@dataclass(frozen=True)
class Form:
    """What was asked, as typed (empty: not asked)."""

    sender: str = ""
    recipient: str = ""
    since: str = ""
    until: str = ""
    status: str = ""
    reason: str = ""
    ref: str = ""
    message_id: str = ""
    client: str = ""

    @property
    def empty(self) -> bool:
        return not any(getattr(self, name) for name in FIELDS)

    def items(self) -> list[tuple[str, str]]:
        """The fields asked, for the links to other pages and for the audit log."""
        return [(name, getattr(self, name)) for name in FIELDS if getattr(self, name)]


@dataclass(frozen=True)
class Position:
    """Where a page begins: after a message (`cursor`: the next page) or before one (`before`: the previous)."""

    cursor: str = ""
    before: str = ""

    @property
    def first(self) -> bool:
        return not self.cursor and not self.before


@dataclass(frozen=True)
class Problem:
    """A field that cannot be searched for: the field, the text key of what is wrong, the value."""

    field: str
    key: str
    value: str


async def form_fields(
    sender: Annotated[str, Query(max_length=MAX_FIELD, description=f"sender: {_ADDRESS}")] = "",
    recipient: Annotated[str, Query(max_length=MAX_FIELD, description=f"recipient: {_ADDRESS}")] = "",
    since: Annotated[str, Query(max_length=MAX_FIELD, description=f"first seen from: {_TIME}")] = "",
    until: Annotated[str, Query(max_length=MAX_FIELD, description=f"first seen before: {_TIME}")] = "",
    status: Annotated[str, Query(pattern=_STATUS, description=f"one of {', '.join(STATUSES)}")] = "",
    reason: Annotated[str, Query(max_length=MAX_FIELD, description="a reason code, e.g. rcpt.unknown_user")] = "",
    ref: Annotated[str, Query(max_length=MAX_FIELD, description="the ref of a reply, or a message key")] = "",
    message_id: Annotated[str, Query(max_length=MAX_FIELD, description="the Message-ID, with its <>")] = "",
    client: Annotated[str, Query(max_length=MAX_FIELD, description="client address or network")] = "",
) -> Form:
    """The search fields of a request (a dependency of the search page, the API and the counts).

    A coroutine although it awaits nothing: FastAPI runs a plain function dependency in its thread
    pool, a thread hop per request for a few string operations."""
    return Form(
        *(value.strip() for value in (sender, recipient, since, until, status, reason, ref, message_id, client))
    )


async def position_fields(
    cursor: Annotated[
        str, Query(max_length=MAX_FIELD, pattern=_CURSOR, description="the next page: `next_cursor` of this one")
    ] = "",
    before: Annotated[
        str,
        Query(max_length=MAX_FIELD, pattern=_CURSOR, description="the previous page: `previous_cursor` of this one"),
    ] = "",
) -> Position:
    return Position(cursor.strip(), before.strip())


def _address(form: Form, name: str, problems: list[Problem]) -> AddressFilter | None:
    text = getattr(form, name)
    if not text:
        return None
    try:
        return AddressFilter.parse(text)
    except ValueError:
        problems.append(Problem(name, "search.bad_address", text))
        return None


def _time(form: Form, name: str, now_us: int, problems: list[Problem]) -> int | None:
    text = getattr(form, name)
    if not text:
        return None
    try:
        return parse_time(text, now=now_us)
    except (TimeSpecError, ValueError, OverflowError):
        problems.append(Problem(name, "search.bad_time", text))
        return None


def _client(text: str, problems: list[Problem]) -> str | None:
    if not text:
        return None
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        problems.append(Problem("client", "search.bad_client", text))
        return None


def _cursor(text: str, name: str, problems: list[Problem]) -> str | None:
    if not text:
        return None
    try:
        parse_cursor(text)
    except ValueError:
        problems.append(Problem(name, "search.bad_cursor", text))
        return None
    return text


def spec_of(
    form: Form, principal: Principal, position: Position, now_us: int, limit: int = PAGE_SIZE
) -> tuple[SearchSpec, list[Problem]]:
    """The index search of `form` in the account's scope, and the fields that could not be used."""
    problems: list[Problem] = []
    status = form.status or None
    if status is not None and status not in STATUSES:
        problems.append(Problem("status", "search.bad_status", status))
        status = None
    spec = SearchSpec(
        sender=_address(form, "sender", problems),
        recipient=_address(form, "recipient", problems),
        since_us=_time(form, "since", now_us, problems),
        until_us=_time(form, "until", now_us, problems),
        ref=normalize(form.ref) if is_ref(form.ref) else form.ref or None,
        message_id=form.message_id or None,
        client=_client(form.client, problems),
        status=status,
        reason=form.reason or None,
        limit=max(1, min(limit, MAX_PAGE)),
        cursor=_cursor(position.cursor, "cursor", problems),
        before=_cursor(position.before, "before", problems),
        allowed_domains=principal.scope,
    )
    return spec, problems
