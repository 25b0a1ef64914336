"""The JSON API under /api: what the command line does, for scripts and other tools.

Authentication is the pages' session cookie: `POST /api/session` with a JSON body
`{"name": ..., "password": ...}` logs in (the same throttling and lockout as the login page) and
answers the session's `csrf_token`; `POST` and `DELETE` calls must send it as `X-CSRF-Token`.
Messages are scoped exactly as on the pages: a customer gets 404 for a message without a
recipient in its domains, and its searches and counts see only its domains' recipients.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Body, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from mailwarden.catalog import Lang
from mailwarden.events import us_to_iso
from mailwarden.sendercheck import check_sender
from mailwarden.store.base import LARGEST_INTEGER
from mailwarden.trace import report
from mailwarden.trace.search import SearchSpec, count, search_index
from mailwarden.web import scope, search
from mailwarden.web.app import forget_cookie, set_cookie
from mailwarden.web.auth import SESSION_COOKIE, Session
from mailwarden.web.deps import (
    SESSION_COOKIE_FIRST,
    AdminDep,
    CsrfDep,
    LoginRefused,
    SessionDep,
    log_in,
    require_session,
    web_of,
)
from mailwarden.web.i18n import t
from mailwarden.web.pages import (
    MAX_FIELD,
    FormDep,
    PositionDep,
    audit_search,
    explain_bounce,
    open_for,
    report_response,
)

DESCRIPTION: Final = __doc__ or ""
ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    401: {"description": "Not logged in (POST /api/session first)"},
    403: {"description": "Missing or wrong X-CSRF-Token, or not an admin"},
    404: {"description": "No such message, or not one this account may see"},
}
MAX_REPORT: Final = 20 * 1024 * 1024

router = APIRouter(prefix="/api", responses=ERRORS)

LangQuery = Annotated[Lang | None, Query(description="de or en; default: the request's language")]
RecipientQuery = Annotated[
    str | None, Query(max_length=MAX_FIELD, description="the recipient to explain (default: the first visible)")
]


class Login(BaseModel):
    name: str = Field(max_length=MAX_FIELD)
    password: str = Field(max_length=1024)


class SessionInfo(BaseModel):
    account: str
    role: Literal["admin", "support", "customer"]
    domains: list[str]
    csrf_token: str


class Fate(BaseModel):
    address: str | None
    status: str
    reason: str | None
    smtp_code: int | None
    enhanced_code: str | None
    reply: str | None
    at: str | None


class Step(BaseModel):
    at: str
    what: str
    text: str
    node: str | None
    source: str | None


class MessageDetail(BaseModel):
    id: str
    ref: str | None
    first_seen: str
    last_seen: str
    node: str
    client_ip: str | None
    client_name: str | None
    helo: str | None
    sender: str | None
    message_id: str | None
    size: int | None
    recipients: list[Fate] = Field(description="the recipients this account may see")
    explained_recipient: str | None
    timeline: list[Step]


class Explanation(BaseModel):
    """`mailwarden explain --format json`: design.md's contract plus the report's additions."""

    ref: str | None
    id: str
    recipient: str | None
    status: str
    reason: str | None
    responsibility: Literal["sender", "recipient", "provider", "none"]
    title: str
    summary: str
    remedy: str
    notes: list[str]
    evidence: list[str]
    lang: Lang
    at: str | None
    timeline: list[str]
    connection: dict[str, str]
    evidence_sha256: str
    generated: str
    redacted: bool
    manifest: str


class VerifyResult(BaseModel):
    ok: bool
    problems: list[str]
    id: str | None
    recipient: str | None
    evidence_events: int


class BounceExplanation(BaseModel):
    bounce: dict[str, Any]
    meaning: list[str]
    traces: list[Explanation]
    lang: Lang


class SearchRow(BaseModel):
    """One recipient of a matching message (a message refused before any recipient has one row without)."""

    id: str = Field(description="what opens the message: GET /api/messages/{id}")
    ref: str | None
    first_seen: str
    last_seen: str
    node: str
    sender: str | None
    recipient: str | None
    status: str
    reason: str | None
    smtp_code: int | None
    client_ip: str | None
    message_id: str | None
    queue_id: str | None
    size: int | None


class SearchResults(BaseModel):
    rows: list[SearchRow] = Field(description="newest message first; all matching recipients of each")
    next_cursor: str | None = Field(description="`cursor` of the next (older) page; null: none")
    previous_cursor: str | None = Field(description="`before` of the previous (newer) page; null: none")


class CountRow(BaseModel):
    status: str
    reason: str | None
    recipients: int


class CountsAnswer(BaseModel):
    """`mailwarden trace --count --format json`: the recipients of every matching message."""

    total: int
    by_status: dict[str, int]
    by_reason: dict[str, int] = Field(description='"" for recipients without a reason')
    counts: list[CountRow]


class SenderFinding(BaseModel):
    """A problem as the gateway would answer it."""

    reason: str
    smtp_code: int
    enhanced_code: str
    reply: str
    remedy: str
    dns_error: str | None = Field(default=None, description="set when a lookup failed for now (infra.dns_tempfail)")
    note: str | None = None


class SenderCheckAnswer(BaseModel):
    """`mailwarden check-sender --format json`: a domain's mail hosts, SPF and each host's address checks,
    or one address's reverse DNS and DNS lists; the findings are what the gateway would refuse for."""

    model_config = ConfigDict(extra="allow")

    domain: str | None = Field(default=None, description="set when a domain was checked")
    address: str | None = Field(default=None, description="set when an IP address was checked")
    checked_at: str
    checked_by: str
    ok: bool = Field(description="no findings: our servers would accept mail from here")
    findings: list[SenderFinding]
    mail_hosts: dict[str, Any] | None = Field(default=None, description="MX records (domain; absent when DNS failed)")
    spf_records: list[str] | None = None
    hosts: list[dict[str, Any]] | None = Field(default=None, description="each mail host's address checks and SPF")
    ptr: list[str] | None = None
    confirmed_name: str | None = None
    dnsbl: dict[str, Any] | None = Field(default=None, description="the DNS lists checked and the listings")


class AuditRecord(BaseModel):
    id: int
    at: str
    account: str
    action: str
    target: str | None
    client_ip: str | None
    detail: dict[str, Any]


def _lang(request: Request, lang: Lang | None) -> Lang:
    chosen: Lang = lang or request.state.lang
    return chosen


def _open(
    request: Request, session: Session, trace_id: str, recipient: str | None, lang: Lang, action: str
) -> scope.Opened:
    request.state.lang = lang
    return open_for(request, session, trace_id, recipient, action)


def _explanation(made: report.Report) -> Explanation:
    return Explanation.model_validate_json(report.as_json(made))


# ---------------------------------------------------------------------------- session
@router.post("/session", response_model=SessionInfo, responses={429: {"description": "Locked after failed logins"}})
async def create_session(request: Request, login: Login) -> Response:
    try:
        token, session = await log_in(request, login.name.strip(), login.password)
    except LoginRefused as refused:
        if refused.locked_minutes is not None:
            return JSONResponse(
                {"detail": f"too many failed logins; try again in {refused.locked_minutes} minutes"}, status_code=429
            )
        return JSONResponse({"detail": "account or password is wrong"}, status_code=401)
    principal = session.principal
    body = SessionInfo(
        account=principal.name, role=principal.role, domains=list(principal.domains), csrf_token=session.csrf
    )
    response = JSONResponse(body.model_dump())
    set_cookie(request, response, SESSION_COOKIE, token)
    return response


@router.get("/session", response_model=SessionInfo)
def get_session(session: SessionDep) -> SessionInfo:
    principal = session.principal
    return SessionInfo(
        account=principal.name, role=principal.role, domains=list(principal.domains), csrf_token=session.csrf
    )


@router.delete("/session", status_code=204)
def delete_session(request: Request, session: CsrfDep) -> Response:
    web = web_of(request)
    web.sessions.end(session)
    web.audit(session.principal.name, "logout", request)
    response = Response(status_code=204)
    forget_cookie(request, response, SESSION_COOKIE)
    return response


# ---------------------------------------------------------------------------- messages
@router.get("/messages/{trace_id}", response_model=MessageDetail)
def message_detail(
    request: Request, session: SessionDep, trace_id: str, recipient: RecipientQuery = None, lang: LangQuery = None
) -> MessageDetail:
    """A message as this account may see it: its recipients' fates and the timeline of one of them."""
    opened = _open(request, session, trace_id, recipient, _lang(request, lang), "message.open")
    made = opened.report
    whole = opened.trace.to_json()
    fates = [Fate.model_validate(f.to_json()) for f in opened.visible]
    return MessageDetail(
        **{k: whole[k] for k in MessageDetail.model_fields if k in whole and k != "recipients"},
        recipients=fates,
        explained_recipient=made.diagnosis.recipient,
        timeline=[
            Step(at=us_to_iso(e.at), what=e.what, text=e.text, node=e.node, source=e.source) for e in made.entries
        ],
    )


@router.get("/messages/{trace_id}/explain", response_model=Explanation)
def explain(
    request: Request, session: SessionDep, trace_id: str, recipient: RecipientQuery = None, lang: LangQuery = None
) -> Explanation:
    """The verdict: status, cause, who must act, the remedy and the evidence (`mailwarden explain`)."""
    return _explanation(_open(request, session, trace_id, recipient, _lang(request, lang), "message.explain").report)


@router.get(
    "/messages/{trace_id}/report",
    response_class=Response,
    responses={
        200: {
            "description": "The report in the format asked for, as a download",
            "content": {
                "text/html": {"schema": {"type": "string"}},
                "application/pdf": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"$ref": "#/components/schemas/Explanation"}},
                "text/csv": {"schema": {"type": "string"}},
                "text/plain": {"schema": {"type": "string"}},
            },
        }
    },
)
def download_report(
    request: Request,
    session: SessionDep,
    trace_id: str,
    format: Annotated[Literal["html", "pdf", "json", "csv", "text"], Query()] = "pdf",
    recipient: RecipientQuery = None,
    lang: LangQuery = None,
) -> Response:
    """The evidence report as a file, with its manifest for `verify`."""
    made = _open(request, session, trace_id, recipient, _lang(request, lang), f"report.{format}").report
    return report_response(made, format)


# ---------------------------------------------------------------------------- search, counts
def _spec(request: Request, session: Session, form: search.Form, position: search.Position, limit: int) -> SearchSpec:
    """The search in the account's scope; a field that cannot be searched for is a 422 naming it."""
    spec, problems = search.spec_of(form, session.principal, position, web_of(request).now_us(), limit)
    if problems:
        raise RequestValidationError(
            [
                {"loc": ["query", p.field], "msg": t(p.key, "en", field=p.field, value=p.value), "type": "value_error"}
                for p in problems
            ]
        )
    return spec


@router.get(
    "/search",
    response_model=SearchResults,
    responses={422: {"description": "A field cannot be searched for"}},
    dependencies=SESSION_COOKIE_FIRST,
)
def search_messages(
    request: Request,
    form: FormDep,
    position: PositionDep,
    limit: Annotated[int, Query(ge=1, le=search.MAX_PAGE, description="messages per page")] = search.PAGE_SIZE,
) -> Response:
    """Messages by sender, recipient, period, status, reason, ref, Message-ID or client (`mailwarden trace`),
    newest first, a page at a time; a customer sees only its domains' recipients."""
    session = require_session(request)
    found = search_index(web_of(request).store, _spec(request, session, form, position, limit))
    audit_search(request, session, "search", form, len(found.rows))
    answer = SearchResults(
        rows=[
            SearchRow(
                id=row.message_key,
                ref=row.ref,
                first_seen=us_to_iso(row.first_seen),
                last_seen=us_to_iso(row.last_seen),
                node=row.node,
                sender=row.sender,
                recipient=row.recipient or None,
                status=row.status,
                reason=row.reason,
                smtp_code=row.smtp_code,
                client_ip=row.client_ip,
                message_id=row.message_id,
                queue_id=row.queue_id,
                size=row.size,
            )
            for row in found.rows
        ],
        next_cursor=found.next_cursor,
        previous_cursor=found.previous_cursor,
    )
    return json_of(answer)


def json_of(model: BaseModel, *, exclude_unset: bool = False) -> Response:
    """A model as JSON, made by pydantic at once: FastAPI would validate it again and walk it in Python
    (`jsonable_encoder`), which cost more than the search itself; `response_model` still describes it.
    `exclude_unset` leaves out the fields an answer does not have (a domain's check has no `ptr`)."""
    return Response(model.model_dump_json(exclude_unset=exclude_unset), media_type="application/json")


@router.get("/counts", response_model=CountsAnswer, responses={422: {"description": "A field cannot be searched for"}})
def count_messages(request: Request, session: SessionDep, form: FormDep) -> Response:
    """How many recipients of the matching messages have each status and reason (`trace --count`)."""
    found = count(web_of(request).store, _spec(request, session, form, search.Position(), search.PAGE_SIZE))
    audit_search(request, session, "count", form, found.total)
    return json_of(CountsAnswer.model_validate(found.to_json()))


@router.post("/reports/verify", response_model=VerifyResult)
def verify_report(
    request: Request,
    session: CsrfDep,
    data: Annotated[bytes, Body(media_type="application/octet-stream", max_length=MAX_REPORT)] = b"",
) -> VerifyResult:
    """Does a report (any format) still match the store? (`mailwarden verify-report`)

    Anything that is not a report made by mailwarden does not verify (`ok` false, the problem named).
    """
    web = web_of(request)
    try:
        manifest = report.read_manifest(data)
    except report.ReportError as exc:
        return VerifyResult(ok=False, problems=[str(exc)], id=None, recipient=None, evidence_events=0)
    if not scope.may_verify(web.store, session.principal, manifest):
        raise scope.NotVisible(str(manifest.get("id")))
    checked = report.verify_bytes(web.store, data)
    web.audit(session.principal.name, "report.verify", request, str(manifest.get("id")), ok=checked.ok)
    recipient = manifest.get("recipient")
    return VerifyResult(
        ok=checked.ok,
        problems=checked.problems,
        id=str(manifest.get("id")) if manifest.get("id") is not None else None,
        recipient=recipient if isinstance(recipient, str) else None,
        evidence_events=len(manifest["event_ids"]),
    )


@router.post("/bounces/explain", response_model=BounceExplanation)
def explain_a_bounce(
    request: Request,
    session: CsrfDep,
    data: Annotated[bytes, Body(media_type="text/plain", max_length=10 * 1024 * 1024)] = b"",
    lang: LangQuery = None,
) -> BounceExplanation:
    """A bounce a sender received, in plain words, linked to our message when it names our ref."""
    request.state.lang = _lang(request, lang)
    result = explain_bounce(request, session, data)
    web_of(request).audit(session.principal.name, "bounce.explain", request, ", ".join(result.found.refs) or None)
    return BounceExplanation(
        bounce=result.found.to_json(),
        meaning=result.meaning,
        traces=[_explanation(made) for made in result.linked],
        lang=request.state.lang,
    )


@router.get("/sender-check", response_model=SenderCheckAnswer)
async def sender_check(
    request: Request,
    session: SessionDep,
    target: Annotated[str, Query(min_length=1, max_length=MAX_FIELD)],
    lang: LangQuery = None,
) -> Response:
    """A sending domain or address as the gateway sees it (`mailwarden check-sender --format json`);
    the remedies in `lang` (the replies are as the gateway sends them)."""
    web = web_of(request)
    found = await check_sender(web.config, target.strip(), _lang(request, lang))
    await run_in_threadpool(web.audit, session.principal.name, "sender.check", request, target.strip())
    return json_of(SenderCheckAnswer.model_validate(found), exclude_unset=True)


@router.get("/audit", response_model=list[AuditRecord])
def audit_log(
    request: Request,
    session: AdminDep,
    before: Annotated[
        int | None, Query(ge=1, le=LARGEST_INTEGER, description="entries older than this id (paging)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditRecord]:
    """Who opened, downloaded, checked or changed what (admins)."""
    entries = web_of(request).store.list_audit(limit=limit, before_id=before)
    return [
        AuditRecord(
            id=e.id or 0,
            at=us_to_iso(e.ts),
            account=e.account,
            action=e.action,
            target=e.target,
            client_ip=e.client_ip,
            detail=e.detail,
        )
        for e in entries
    ]
