"""What pages and API handlers share per request: the session, the admin test, CSRF and the login itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from mailwarden.store.accounts import WebAccount
from mailwarden.web import accounts
from mailwarden.web.auth import CSRF_HEADER, SESSION_COOKIE, Session, same

if TYPE_CHECKING:
    from mailwarden.web.app import Web


class LoginRequired(Exception):
    """No live session: pages send the browser to the login, the API answers 401."""


class Forbidden(Exception):
    """Logged in, but the page is for admins."""


class CsrfFailed(Exception):
    """A form or state-changing API call without the session's CSRF token."""


class TooManyRequests(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


def web_of(request: Request) -> Web:
    web: Web = request.app.state.web
    return web


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client is not None else None


def current_session(request: Request) -> Session | None:
    """The request's live session (looked up once per request), or None."""
    if not hasattr(request.state, "session"):
        request.state.session = web_of(request).sessions.resolve(request.cookies.get(SESSION_COOKIE))
    session: Session | None = request.state.session
    return session


def require_session(request: Request) -> Session:
    session = current_session(request)
    if session is None:
        raise LoginRequired()
    return session


async def require_session_cookie(request: Request) -> None:
    """`SessionDep` for the busiest handlers, which call `require_session` themselves, so that the
    session is looked up in the handler's own worker thread: FastAPI runs every plain-function
    dependency in a thread of its own, a hop that costs about 0.1 ms of CPU a request, about as much
    as a search's index query. As with `SessionDep`, the login comes before the request's fields: no
    session cookie is LoginRequired here, and fields that cannot be validated are answered as
    LoginRequired too when the cookie's session has ended (`session_before_fields`)."""
    if not request.cookies.get(SESSION_COOKIE):
        raise LoginRequired()
    request.state.session_unchecked = True


async def session_before_fields(request: Request) -> None:
    """Raise LoginRequired for a request whose fields failed validation before its handler could look
    at its session (`require_session_cookie`), when that session has ended."""
    if getattr(request.state, "session_unchecked", False) and await run_in_threadpool(current_session, request) is None:
        raise LoginRequired()


def require_admin(request: Request) -> Session:
    session = require_session(request)
    if session.principal.role != "admin":
        raise Forbidden()
    return session


def require_csrf_header(request: Request) -> Session:
    """A state-changing API call: the session and its token in the X-CSRF-Token header."""
    session = require_session(request)
    if not same(request.headers.get(CSRF_HEADER), session.csrf):
        raise CsrfFailed()
    return session


def check_form_token(session: Session, token: str | None) -> None:
    if not same(token, session.csrf):
        raise CsrfFailed()


SessionDep = Annotated[Session, Depends(require_session)]
AdminDep = Annotated[Session, Depends(require_admin)]
CsrfDep = Annotated[Session, Depends(require_csrf_header)]
SESSION_COOKIE_FIRST = [Depends(require_session_cookie)]  # a route's `dependencies`, see require_session_cookie


@dataclass(frozen=True)
class LoginRefused(Exception):
    """A login that did not succeed: wrong account or password, or locked for `minutes`."""

    locked_minutes: int | None = None


async def log_in(request: Request, name: str, password: str) -> tuple[str, Session]:
    """Check a login under the guard; the new session's token, or LoginRefused (after the failure delay).

    A locked address or account is refused before the password is looked at, even when it is right.
    """
    web = web_of(request)
    address = client_ip(request) or "-"
    account_key = name.lower()[:64]
    lock = await run_in_threadpool(web.guard.locked, address, account_key)  # the guard's state is in the store
    if lock is not None:
        await run_in_threadpool(web.audit, name[:64], "login.locked", request, None, lock=lock.scope)
        raise LoginRefused(max(1, int(lock.remaining // 60) + 1))
    account: WebAccount | None = await run_in_threadpool(accounts.authenticate, web.store, name, password)
    if account is None:
        failures, delay = await run_in_threadpool(web.guard.failed, address, account_key)
        await run_in_threadpool(web.audit, name[:64], "login.failed", request, None, failures=failures)
        await web.sleep(delay)
        lock = await run_in_threadpool(web.guard.locked, address, account_key)
        raise LoginRefused(max(1, int(lock.remaining // 60) + 1) if lock is not None else None)
    await run_in_threadpool(web.guard.succeeded, account_key)
    token, session = await run_in_threadpool(web.sessions.start, account, request.cookies.get(SESSION_COOKIE))
    await run_in_threadpool(web.audit, account.name, "login", request)
    return token, session
