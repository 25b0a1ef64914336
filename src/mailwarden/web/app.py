"""The tracking center as one ASGI application: pages, the JSON API under /api, the public /why/REF.

`create_app` wires the parts: `pages` (server-rendered, German and English), `api` (JSON, with
its OpenAPI schema at /api/openapi.json), the login sessions (`auth`), who sees what (`scope`),
and the headers every answer carries. Handlers that read the store are plain functions, which
FastAPI runs in worker threads: the event loop is shared with the SMTP gateway in `mailwarden
serve`, and must never wait for SQLite or a report being made.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final
from urllib.parse import urlencode

import jinja2
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from mailwarden import __version__
from mailwarden.catalog import LANGS, Lang
from mailwarden.config import Config
from mailwarden.events import now_us
from mailwarden.loginguard import LoginGuard
from mailwarden.store import Store
from mailwarden.store.accounts import AuditEntry
from mailwarden.store.web_state import StoredGuardState
from mailwarden.text import printable
from mailwarden.trace.rules import when
from mailwarden.web.auth import Session, Sessions
from mailwarden.web.dashboard import DayCounts
from mailwarden.web.deps import (
    CsrfFailed,
    Forbidden,
    LoginRequired,
    TooManyRequests,
    client_ip,
    session_before_fields,
    web_of,
)
from mailwarden.web.i18n import LANG_COOKIE, negotiate, status_name, t
from mailwarden.web.scope import NotVisible, Principal

log = logging.getLogger(__name__)

# No inline script or style anywhere; forms post only to us; nobody may frame a page.
CSP: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Final = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}
ONE_YEAR: Final = 365 * 86400
WHY_COUNTER: Final = "web.why"  # the store counter of /why/REF requests per client address


@dataclass
class Web:
    """What every handler needs: the configuration, the store, the sessions and the counters."""

    config: Config
    store: Store
    sessions: Sessions
    guard: LoginGuard
    templates: jinja2.Environment
    now_us: Callable[[], int] = now_us
    wall: Callable[[], float] = time.time  # the /why rate limit's minutes
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # the delay after a failed login
    day_counts: DayCounts = field(default_factory=lambda: DayCounts(time.time))  # the dashboard's

    def audit(self, account: str, action: str, request: Request, target: str | None = None, **detail: Any) -> None:
        entry = AuditEntry(
            self.now_us(),
            account,
            action,
            printable(target, 200) if target is not None else None,
            client_ip(request),
            {k: printable(str(v), 200) for k, v in detail.items() if v is not None},
        )
        try:
            self.store.add_audit(entry)
        except Exception:  # the audit must never turn an answer into a 500; it is logged instead
            log.exception("could not record audit entry %s %s %s", account, action, target)

    def render(self, request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        lang: Lang = request.state.lang
        session: Session | None = getattr(request.state, "session", None)
        context = {
            "lang": lang,
            "t": lambda key, **v: t(key, lang, **v),
            "when": lambda ts_us: when(ts_us, lang),
            "status_name": lambda status: status_name(status, lang),
            "me": session.principal if session is not None else None,
            "csrf": session.csrf if session is not None else "",
            "nav": nav_for(session.principal) if session is not None else [],
            "path": request.url.path,
            "switch": _language_links(request),
            "version": __version__,
            **values,
        }
        return HTMLResponse(self.templates.get_template(name).render(context), status_code=status)

    def check_why_rate(self, request: Request) -> None:
        # Counted in the store: every worker process (and web node) of the tracking center counts the same client.
        count = self.store.count_hit(WHY_COUNTER, client_ip(request) or "-", self.wall())
        if count > self.config.web.why_per_minute:
            raise TooManyRequests(60)


# The navigation: (text key, path, admins only).
NAV: Final = (
    ("nav.search", "/search", False),
    ("nav.dashboard", "/dashboard", False),
    ("nav.message", "/", False),
    ("nav.bounce", "/bounce", False),
    ("nav.sender", "/sender-check", False),
    ("nav.audit", "/audit", True),
    ("nav.accounts", "/accounts", True),
)


def nav_for(principal: Principal) -> list[tuple[str, str]]:
    return [(key, path) for key, path, admin in NAV if not admin or principal.role == "admin"]


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("mailwarden.web", "templates"),
        autoescape=True,  # every value from a message (addresses, HELO, replies, log lines) is escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def create_app(
    config: Config,
    store: Store,
    *,
    now: Callable[[], int] = now_us,
    wall: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> FastAPI:
    """The application over `store`; the clocks are injectable for tests."""
    from mailwarden.web import api, pages

    settings = config.web
    web = Web(
        config=config,
        store=store,
        sessions=Sessions(store, settings, now),
        guard=LoginGuard(
            base_delay=settings.login_failure_delay,
            max_delay=settings.login_failure_delay_max,
            max_failures=settings.login_max_failures,
            lock_seconds=settings.login_lock_seconds,
            clock=wall,  # the store's locks are seen by other processes: wall-clock times
            state=StoredGuardState(store),
        ),
        templates=_environment(),
        now_us=now,
        wall=wall,
        sleep=sleep,
        day_counts=DayCounts(wall),
    )
    app = FastAPI(
        title="mailwarden tracking center",
        version=__version__,
        description=api.DESCRIPTION,
        openapi_url="/api/openapi.json",
        docs_url=None,  # Swagger UI and ReDoc load from a CDN; the schema is enough
        redoc_url=None,
    )
    app.state.web = web
    app.include_router(api.router)
    app.include_router(pages.router)
    static = resources.files("mailwarden.web") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired | None = None) -> Response:
        if _is_api(request):
            return JSONResponse({"detail": "log in first: POST /api/session"}, status_code=401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?{_next_query(target)}", status_code=303)

    @app.exception_handler(NotVisible)
    async def not_visible(request: Request, exc: NotVisible) -> Response:
        return _error(request, 404, "notfound.title", "notfound.text")

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return _error(request, 403, "error.title", "error.forbidden")

    @app.exception_handler(CsrfFailed)
    async def csrf_failed(request: Request, exc: CsrfFailed) -> Response:
        return _error(request, 403, "error.title", "error.csrf")

    @app.exception_handler(TooManyRequests)
    async def too_many(request: Request, exc: TooManyRequests) -> Response:
        response = _error(request, 429, "error.title", "error.too_many")
        response.headers["retry-after"] = str(exc.retry_after)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return _error(request, 404, "notfound.title", "notfound.text")
        if _is_api(request):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        return _error(request, exc.status_code, "error.title", "error.title")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        try:
            await session_before_fields(request)
        except LoginRequired:
            return await login_required(request)
        if _is_api(request):
            return JSONResponse({"detail": _jsonable(exc.errors())}, status_code=422)
        return _error(request, 400, "error.title", "error.title")

    app.add_middleware(LanguageAndHeaders)
    # Outermost: the client address and scheme come from X-Forwarded-* only when a configured proxy sent them.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.trusted_proxies))
    return app


class LanguageAndHeaders:
    """The request's language (`request.state.lang`) and the headers every answer carries.

    Plain ASGI rather than Starlette's BaseHTTPMiddleware, which runs every request's answer
    through a task and a stream of its own: measurable at hundreds of requests a second. For the
    same reason the headers are added as the bytes they are sent as, made once.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        lang, chosen = negotiate(
            request.query_params.get("lang"), request.cookies.get(LANG_COOKIE), request.headers.get("accept-language")
        )
        scope.setdefault("state", {})["lang"] = lang
        extra = list(_EVERY_ANSWER)
        if scope.get("scheme") == "https":
            extra.append(_HSTS)
        if not scope["path"].startswith("/static/"):
            extra.append(_NO_STORE)
        cookies = []
        if chosen:
            remembered = Response()
            set_cookie(request, remembered, LANG_COOKIE, lang, max_age=ONE_YEAR)
            cookies = [(name, value) for name, value in remembered.raw_headers if name == b"set-cookie"]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                message["headers"] = headers + [pair for pair in extra if pair[0] not in present] + cookies
            await send(message)

        await self.app(scope, receive, with_headers)


def _header(name: str, value: str) -> tuple[bytes, bytes]:
    return name.encode("latin-1"), value.encode("latin-1")


_EVERY_ANSWER: Final = tuple(_header(name, value) for name, value in SECURITY_HEADERS.items())
_HSTS: Final = _header("strict-transport-security", f"max-age={ONE_YEAR}")
_NO_STORE: Final = _header("cache-control", "no-store")


def _language_links(request: Request) -> dict[str, str]:
    """This page in each language: query-only links, so the page never repeats the path it was asked for.
    The page's other fields are encoded once for all languages."""
    kept = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "lang"])
    return {lang: f"?{kept}&lang={lang}" if kept else f"?lang={lang}" for lang in LANGS}


def _jsonable(errors: Any) -> Any:
    """Validation errors as JSON: their `ctx` may hold exceptions, their `input` raw bytes."""
    from fastapi.encoders import jsonable_encoder

    return jsonable_encoder(errors, custom_encoder={bytes: lambda b: b.decode("utf-8", "replace")})


def _error(request: Request, status: int, title: str, text: str) -> Response:
    if _is_api(request):
        return JSONResponse({"detail": t(text, "en")}, status_code=status)
    return web_of(request).render(request, "error.html", status, title=title, text=text)


def _next_query(target: str) -> str:
    return urlencode({"next": target})


def set_cookie(request: Request, response: Response, name: str, value: str, *, max_age: int | None = None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def forget_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(name, path="/", httponly=True, samesite="lax", secure=request.url.scheme == "https")
