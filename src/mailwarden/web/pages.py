"""The tracking center's pages: server-rendered HTML in German and English, plain forms, no script.

Handlers that read the store or make a report are plain functions (FastAPI runs them in worker
threads). Every form that changes something posts the session's CSRF token (the search is a GET:
it changes nothing but the audit log); every message goes through `scope`, every search and count
runs in the account's scope.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Final
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from mailwarden.events import us_to_iso
from mailwarden.refs import normalize
from mailwarden.sendercheck import check_sender
from mailwarden.store import StoreError
from mailwarden.store.base import LARGEST_INTEGER
from mailwarden.trace import bounce, report
from mailwarden.trace.model import STATUSES
from mailwarden.trace.search import search_index
from mailwarden.web import accounts, dashboard, scope, search
from mailwarden.web import timeline as visual
from mailwarden.web.app import forget_cookie, set_cookie
from mailwarden.web.auth import PRE_COOKIE, SESSION_COOKIE, Session, same
from mailwarden.web.deps import (
    SESSION_COOKIE_FIRST,
    AdminDep,
    LoginRefused,
    SessionDep,
    check_form_token,
    log_in,
    require_session,
    web_of,
)
from mailwarden.web.why import refusals

router = APIRouter(include_in_schema=False)

DOWNLOADS: Final = {"html": "html", "pdf": "pdf", "json": "json", "csv": "csv", "text": "txt"}
MEDIA_TYPES: Final = {
    "html": "text/html; charset=utf-8",
    "pdf": "application/pdf",
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "text": "text/plain; charset=utf-8",
}
AUDIT_PAGE: Final = 100
MAX_FIELD: Final = 200


def message_path(trace_id: str, recipient: str | None = None) -> str:
    path = f"/message/{quote(trace_id, safe='')}"
    return path + (f"?recipient={quote(recipient, safe='')}" if recipient else "")


def _safe_next(target: str | None) -> str:
    """Where to go after the login: only a path of ours (no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


# ---------------------------------------------------------------------------- login
@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    return _login_page(request, next, error=None)


def _login_page(
    request: Request, next_path: str | None, error: str | None, status: int = 200, minutes: int = 0
) -> Response:
    web = web_of(request)
    pre = web.sessions.new_pre_value()
    response = web.render(
        request,
        "login.html",
        status,
        pre_csrf=web.sessions.pre_csrf(pre),
        next=_safe_next(next_path),
        error=error,
        minutes=minutes,
    )
    set_cookie(request, response, PRE_COOKIE, pre)
    return response


@router.post("/login")
async def login(
    request: Request,
    name: Annotated[str, Form(max_length=MAX_FIELD)],
    password: Annotated[str, Form(max_length=1024)],
    csrf: Annotated[str, Form(max_length=MAX_FIELD)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    web = web_of(request)
    pre = request.cookies.get(PRE_COOKIE)
    if not pre or not same(csrf, web.sessions.pre_csrf(pre)):
        return _login_page(request, next, error="login.expired", status=403)
    try:
        token, _ = await log_in(request, name.strip(), password)
    except LoginRefused as refused:
        if refused.locked_minutes is not None:
            return _login_page(request, next, error="login.locked", status=429, minutes=refused.locked_minutes)
        return _login_page(request, next, error="login.failed", status=401)
    response = RedirectResponse(_safe_next(next), status_code=303)
    set_cookie(request, response, SESSION_COOKIE, token)
    forget_cookie(request, response, PRE_COOKIE)
    return response


@router.post("/logout")
def logout(request: Request, session: SessionDep, csrf: Annotated[str, Form(max_length=MAX_FIELD)] = "") -> Response:
    check_form_token(session, csrf)
    web = web_of(request)
    web.sessions.end(session)
    web.audit(session.principal.name, "logout", request)
    response = RedirectResponse("/login", status_code=303)
    forget_cookie(request, response, SESSION_COOKIE)
    return response


# ---------------------------------------------------------------------------- messages
@router.get("/")
def home(request: Request, session: SessionDep) -> Response:
    return web_of(request).render(request, "home.html")


@router.get("/message")
def find_message(
    session: SessionDep,
    id: Annotated[str, Query(max_length=MAX_FIELD)] = "",
    recipient: Annotated[str, Query(max_length=MAX_FIELD)] = "",
) -> Response:
    """The home page's form: on to the message's own address."""
    if not id.strip():
        return RedirectResponse("/", status_code=303)
    return RedirectResponse(message_path(id.strip(), recipient.strip() or None), status_code=303)


def open_for(request: Request, session: Session, trace_id: str, recipient: str | None, action: str) -> scope.Opened:
    """The report of a message this session may see (audited, found or not); NotVisible otherwise."""
    web = web_of(request)
    try:
        made = scope.open_report(
            web.store,
            session.principal,
            trace_id,
            recipient=recipient or None,
            lang=request.state.lang,
            domains=web.config.mail.domains,
        )
    except scope.NotVisible:
        web.audit(session.principal.name, action, request, trace_id, recipient=recipient, found="no")
        raise
    web.audit(
        session.principal.name, action, request, made.report.diagnosis.id, recipient=made.report.diagnosis.recipient
    )
    return made


@router.get("/message/{trace_id}", dependencies=SESSION_COOKIE_FIRST)
def message(
    request: Request,
    trace_id: str,
    recipient: Annotated[str | None, Query(max_length=MAX_FIELD)] = None,
) -> Response:
    opened = open_for(request, require_session(request), trace_id, recipient, "message.open")
    made = opened.report
    path, query = message_path(made.diagnosis.id), _recipient_query(made.diagnosis.recipient)
    downloads = [(fmt, f"{path}/report.{ext}{query}") for fmt, ext in DOWNLOADS.items()]
    return web_of(request).render(
        request,
        "message.html",
        made=made,
        d=made.diagnosis,
        timeline=visual.build(made),
        recipients=[(fate, message_path(made.diagnosis.id, fate.address)) for fate in opened.visible if fate.address],
        downloads=downloads,
    )


def _recipient_query(recipient: str | None) -> str:
    return f"?recipient={quote(recipient, safe='')}" if recipient else ""


@router.get("/message/{trace_id}/report.{ext}")
def download(
    request: Request,
    session: SessionDep,
    trace_id: str,
    ext: str,
    recipient: Annotated[str | None, Query(max_length=MAX_FIELD)] = None,
) -> Response:
    fmt = next((f for f, e in DOWNLOADS.items() if e == ext), None)
    if fmt is None:
        raise scope.NotVisible(ext)
    made = open_for(request, session, trace_id, recipient, f"report.{fmt}").report
    return report_response(made, fmt)


def report_response(made: report.Report, fmt: str) -> Response:
    """A report as a download (never shown inline: the HTML report has its own style)."""
    name = f"mailwarden-report-{made.diagnosis.id}.{DOWNLOADS[fmt]}"
    return Response(
        report.render(made, fmt),
        media_type=MEDIA_TYPES[fmt],
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


# ---------------------------------------------------------------------------- search, dashboard
FormDep = Annotated[search.Form, Depends(search.form_fields)]
PositionDep = Annotated[search.Position, Depends(search.position_fields)]


def search_link(form: search.Form, **extra: str) -> str:
    return _search_link(urlencode(form.items()), extra)


def _search_link(asked: str, extra: dict[str, str]) -> str:
    """`search_link` with the form's fields already encoded: a results page links its counts and
    pages with the same fields, and encoding them for each link was a tenth of its rendering."""
    return "/search?" + "&".join(part for part in (asked, urlencode(extra)) if part)


def audit_search(request: Request, session: Session, action: str, form: search.Form, found: int | None) -> None:
    """Who searched for what (every search and count; support's above all)."""
    summary = " ".join(f"{name}={value}" for name, value in form.items()) or "everything"
    web_of(request).audit(session.principal.name, action, request, summary, found=found)


@router.get("/search", dependencies=SESSION_COOKIE_FIRST)
def search_page(request: Request, form: FormDep, position: PositionDep) -> Response:
    """The search form, one page of results (newest first) and the counts of all of them by status and reason."""
    session = require_session(request)
    web = web_of(request)
    if form.empty and position.first:
        form = search.Form(since=search.DEFAULT_SINCE)
    spec, problems = search.spec_of(form, session.principal, position, web.now_us())
    found = None if problems else search_index(web.store, spec, counts=True)
    audit_search(request, session, "search", form, len(found.rows) if found is not None else None)
    asked = urlencode(form.items())
    pages = {}
    if found is not None and found.next_cursor:
        pages["next"] = _search_link(asked, {"cursor": found.next_cursor})
    if found is not None and found.previous_cursor:
        pages["previous"] = _search_link(asked, {"before": found.previous_cursor})
    return web.render(
        request,
        "search.html",
        400 if problems else 200,
        form=form,
        problems=problems,
        found=found,
        pages=pages,
        statuses=STATUSES,
        narrowed=lambda **extra: _search_link(asked, extra),
        open_link=message_path,
        reason_name=lambda reason: dashboard.reason_name(reason, request.state.lang),
    )


@router.get("/dashboard")
def dashboard_page(request: Request, session: SessionDep) -> Response:
    """Today's and the last 30 days' traffic by outcome and by reason, as charts drawn here."""
    web = web_of(request)
    lang = request.state.lang
    traffic = web.day_counts.traffic(web.store, session.principal.scope, web.now_us())
    today, first = traffic.days[-1].start_us, traffic.days[0].start_us

    def period(since: int, until: int | None = None) -> Callable[..., str]:
        form = search.Form(since=when_iso(since), until=when_iso(until) if until is not None else "")
        return lambda **extra: search_link(form, **{k: v or "" for k, v in extra.items()})

    return web.render(
        request,
        "dashboard.html",
        traffic=traffic,
        today_status=dashboard.by_status(traffic.today, lang, period(today)),
        today_reason=dashboard.by_reason(traffic.today, lang, period(today)),
        month_days=dashboard.by_day(
            traffic, lang, lambda start, status: period(start, start + dashboard.DAY_US)(status=status)
        ),
        month_status=dashboard.by_status(traffic.month, lang, period(first)),
        month_reason=dashboard.by_reason(traffic.month, lang, period(first)),
        search_today=period(today)(),
        search_month=period(first)(),
    )


def when_iso(ts_us: int) -> str:
    """A time as the search's period fields take it (minutes, UTC)."""
    return us_to_iso(ts_us)[:16]


# ---------------------------------------------------------------------------- bounce, sender check
@router.get("/bounce")
def bounce_form(request: Request, session: SessionDep) -> Response:
    return web_of(request).render(request, "bounce.html", text="", result=None)


@router.post("/bounce")
def bounce_explain(
    request: Request,
    session: SessionDep,
    text: Annotated[str, Form(max_length=bounce.MAX_INPUT)],
    csrf: Annotated[str, Form(max_length=MAX_FIELD)] = "",
) -> Response:
    check_form_token(session, csrf)
    web = web_of(request)
    result = explain_bounce(request, session, text.encode("utf-8", "surrogateescape"))
    web.audit(session.principal.name, "bounce.explain", request, ", ".join(result.found.refs) or None)
    return web.render(request, "bounce.html", text=text, result=result)


@dataclass(frozen=True)
class BounceResult:
    """A pasted bounce: what it says, what its status code means, and our messages it names (if visible)."""

    found: bounce.Bounce
    meaning: list[str]
    linked: list[report.Report]


def explain_bounce(request: Request, session: Session, data: bytes) -> BounceResult:
    web = web_of(request)
    found = bounce.parse(data[: bounce.MAX_INPUT])
    linked = []
    for ref in found.refs:
        made = scope.linked_report(
            web.store, session.principal, found, ref, lang=request.state.lang, domains=web.config.mail.domains
        )
        if made is not None:
            linked.append(made)
    return BounceResult(found, bounce.code_explanation(found, request.state.lang), linked)


@router.get("/sender-check")
async def sender_check(
    request: Request,
    session: SessionDep,
    target: Annotated[str, Query(max_length=MAX_FIELD)] = "",
) -> Response:
    web = web_of(request)
    result = None
    if target.strip():
        result = await check_sender(web.config, target.strip(), request.state.lang)
        await run_in_threadpool(web.audit, session.principal.name, "sender.check", request, target.strip())
    return await run_in_threadpool(web.render, request, "sender.html", 200, target=target, result=result)


# ---------------------------------------------------------------------------- admins
@router.get("/audit")
def audit(
    request: Request,
    session: AdminDep,
    before: Annotated[int | None, Query(ge=1, le=LARGEST_INTEGER)] = None,
) -> Response:
    web = web_of(request)
    entries = web.store.list_audit(limit=AUDIT_PAGE, before_id=before)
    older = entries[-1].id if len(entries) == AUDIT_PAGE else None
    return web.render(request, "audit.html", entries=entries, older=older)


@router.get("/accounts")
def accounts_page(request: Request, session: AdminDep) -> Response:
    return _accounts_page(request, message=None, error=None)


def _accounts_page(request: Request, message: str | None, error: str | None, status: int = 200) -> HTMLResponse:
    web = web_of(request)
    return web.render(
        request, "accounts.html", status, accounts=web.store.list_accounts(), message=message, error=error
    )


@router.post("/accounts")
def account_add(
    request: Request,
    session: AdminDep,
    name: Annotated[str, Form(max_length=64)],
    role: Annotated[str, Form(max_length=20)],
    password: Annotated[str, Form(max_length=1024)],
    domains: Annotated[str, Form(max_length=2000)] = "",
    csrf: Annotated[str, Form(max_length=MAX_FIELD)] = "",
) -> Response:
    check_form_token(session, csrf)
    web = web_of(request)
    try:
        accounts.add(web.store, name.strip(), role, [d for d in domains.replace(",", " ").split() if d], password)
    except StoreError as exc:
        return _accounts_page(request, message=None, error=str(exc), status=400)
    web.audit(session.principal.name, "account.add", request, name.strip(), role=role)
    return _accounts_page(request, message=name.strip(), error=None)


@router.post("/accounts/{name}/remove")
def account_remove(
    request: Request, session: AdminDep, name: str, csrf: Annotated[str, Form(max_length=MAX_FIELD)] = ""
) -> Response:
    check_form_token(session, csrf)
    web = web_of(request)
    if name == session.principal.name:
        return _accounts_page(request, message=None, error="you cannot remove your own account", status=400)
    try:
        accounts.remove(web.store, name)
    except StoreError as exc:
        return _accounts_page(request, message=None, error=str(exc), status=404)
    web.audit(session.principal.name, "account.remove", request, name)
    return RedirectResponse("/accounts", status_code=303)


# ---------------------------------------------------------------------------- public
@router.get("/why/{ref:path}")
def why(request: Request, ref: str) -> Response:
    """No login. The same page shape and the same work for every ref that shows nothing."""
    web = web_of(request)
    web.check_why_rate(request)
    found = refusals(web.store, ref, request.state.lang)
    return web.render(request, "why.html", refusals=found, ref=normalize(ref) if found else None)
