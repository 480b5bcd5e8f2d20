"""/admin: the operator dashboard's pages, their live JSON, and its actions.

Pages render on the server (Jinja2) from the same report functions the CLI
prints, reached through stride.api.service. Each page's live regions are
re-rendered by /admin/live/… as HTML fragments inside a small JSON document,
which dashboard.js polls and swaps in, so a page and its updates share one
template. Every state change is a POST carrying the session's CSRF token,
answered with a redirect (post/redirect/get) and a one-shot message.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Annotated, Any, TypeVar
from urllib.parse import quote, urlencode
from uuid import UUID

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, StrictUndefined, Template, select_autoescape

from stride import __version__
from stride.api import service
from stride.api.auth import Authenticator
from stride.api.dashboard import views
from stride.api.dashboard.forms import (
    FormError,
    clean_text,
    positive_number,
    read_form,
    whole_number,
)
from stride.api.dashboard.middleware import DashboardHeaders
from stride.api.dashboard.series import BucketSeries
from stride.api.dashboard.sessions import (
    CSRF_FIELD,
    SESSION_COOKIE,
    SESSION_LIFETIME,
    SIGNIN_COOKIE,
    SIGNIN_LIFETIME,
    clear_cookie,
    new_secret,
    safe_next,
    session_digest,
    set_cookie,
    tokens_match,
)
from stride.api.dashboard.snapshots import Snapshot, SnapshotCache
from stride.api.errors import ApiError
from stride.api.state import database_of

router = APIRouter(prefix="/admin", include_in_schema=False)

T = TypeVar("T")

MAX_SOURCE_CHARS = 200  # as the API's and the trigger's source labels
RUN_BUCKET_SECONDS = 1.0
RUN_SMOOTH_BUCKETS = 5  # the run chart draws a 5-second moving average
RUN_CHART_HOURS = 6
QUEUE_BUCKET_SECONDS = 5.0
QUEUE_CHART_MINUTES = 10
RATE_WINDOW_SECONDS = 16.0
SETTLED_RUN_MAX_AGE = 30.0
# A page waits this long for data never read before, then shows what it has and
# lets the live poll fill in the rest; a live poll waits longer.
PAGE_WAIT = 0.15
LIVE_WAIT = 2.0
MAX_VERIFY_SAMPLE = 1000
MIN_MAX_RATE = 0.1  # as `stride backfill objective-foundation --max-rate`
POLL_MILLISECONDS = 1500


def _static_version() -> str:
    digest = hashlib.sha256(__version__.encode())
    for entry in sorted(resources.files(__package__).joinpath("static").iterdir(), key=str):
        if entry.is_file():
            digest.update(entry.read_bytes())
    return digest.hexdigest()[:12]


STATIC_VERSION = _static_version()

templates = Environment(
    loader=PackageLoader("stride.api.dashboard", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters.update(views.FILTERS)
templates.globals.update(
    static=lambda name: f"/admin/static/{name}?v={STATIC_VERSION}",
    quote=lambda value: quote(str(value), safe=""),
    poll_ms=POLL_MILLISECONDS,
    version=__version__,
    csrf_field=CSRF_FIELD,
)


# --- state, sessions -------------------------------------------------------------------------


@dataclass(slots=True)
class Dashboard:
    """Per-process state: snapshots of slow reads and the throughput series."""

    snapshots: SnapshotCache = field(default_factory=SnapshotCache)
    run_series: dict[int, BucketSeries] = field(default_factory=dict)
    queue_series: BucketSeries | None = None


def dashboard_of(request: Request) -> Dashboard:
    dash: Dashboard = request.app.state.dashboard
    return dash


@dataclass(frozen=True, slots=True)
class AdminSession:
    digest: bytes
    csrf_token: str
    has_flash: bool
    token_id: str
    user_id: UUID


class SignInRequired(Exception):
    """No live session: pages redirect to the sign-in form, polls and actions refuse."""


class DashboardError(Exception):
    """An error page: status and a sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def admin_session(request: Request) -> AdminSession:
    """The signed-in operator's session (dependency of every page, poll and action)."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id or len(session_id) > 128:
        raise SignInRequired
    digest = session_digest(session_id)
    stored = await service.find_admin_session(database_of(request), digest)
    if stored is None or not stored.token_usable(datetime.now(UTC)):
        raise SignInRequired
    return AdminSession(
        digest, stored.csrf_token, stored.has_flash, stored.token_id, stored.user_id
    )


Session = Annotated[AdminSession, Depends(admin_session)]


async def action_form(request: Request, session: Session) -> dict[str, str]:
    """An action's form fields, once its CSRF token matched the session's (403 otherwise).

    The session is checked before the body is read, so an anonymous POST costs nothing.
    """
    refusal = DashboardError(
        403,
        "This form did not come from your dashboard session (its CSRF token is missing "
        "or wrong). Reload the page and try again.",
    )
    try:
        form = await read_form(request)
    except FormError as exc:
        # A body that is not a form (or no body) carries no CSRF token either.
        raise (refusal if exc.status == 415 else DashboardError(exc.status, exc.message)) from None
    if not tokens_match(form.get(CSRF_FIELD), session.csrf_token):
        raise refusal
    return form


Form = Annotated[dict[str, str], Depends(action_form)]


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


# --- rendering -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Flash:
    kind: str  # ok or error
    text: str


def _encode_flash(kind: str, text: str) -> str:
    return f"{kind}:{text}"


def _decode_flash(stored: str | None) -> Flash | None:
    if not stored:
        return None
    kind, _, text = stored.partition(":")
    return Flash(kind if kind in ("ok", "error") else "ok", text)


async def _page(
    request: Request,
    name: str,
    session: AdminSession | None,
    *,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    flash = None
    if session is not None and session.has_flash:
        flash = _decode_flash(await service.pop_admin_flash(database_of(request), session.digest))
    body = templates.get_template(name).render(
        session=session,
        csrf_token=session.csrf_token if session else "",
        flash=flash,
        now=datetime.now(UTC),
        **context,
    )
    return HTMLResponse(body, status_code=status)


def _fragments(template: Template, regions: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Render the named macros of a regions template, each with its own arguments."""
    module = template.make_module({})
    return {name: str(getattr(module, name)(**args)) for name, args in regions.items()}


async def _redirect_with(
    request: Request, session: AdminSession, to: str, kind: str, message: str
) -> RedirectResponse:
    await service.set_admin_flash(
        database_of(request), session.digest, _encode_flash(kind, message)
    )
    return RedirectResponse(to, status_code=303)


def _checked_source(value: str | None) -> str | None:
    """A source label from a query string or a hidden field, kept exactly as given."""
    if value is None or value == "":
        return None
    if len(value) > MAX_SOURCE_CHARS or any(not ch.isprintable() for ch in value):
        raise DashboardError(422, "That is not a backfill source label.")
    return value


def _backfill_url(source: str | None, fragment: str = "") -> str:
    query = f"?{urlencode({'source': source})}" if source else ""
    return f"/admin/backfill{query}{'#' + fragment if fragment else ''}"


async def _get(
    request: Request,
    key: tuple[Any, ...],
    compute: Callable[[], Awaitable[T]],
    *,
    max_age: float,
    wait: float | None,
) -> Snapshot[T] | None:
    return await dashboard_of(request).snapshots.get(key, compute, max_age=max_age, wait=wait)


# --- sign-in and sign-out --------------------------------------------------------------------


@router.get("")
async def root() -> RedirectResponse:
    return RedirectResponse("/admin/backfill", status_code=303)


def _signin_page(
    request: Request,
    next_path: str,
    *,
    error: str | None = None,
    notice: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    """The sign-in form, with a fresh double-submit token in its cookie and its field."""
    csrf = new_secret()
    body = templates.get_template("signin.html").render(
        session=None,
        csrf_token=csrf,
        flash=None,
        now=datetime.now(UTC),
        title="Sign in",
        next_path=next_path,
        error=error,
        notice=notice,
    )
    response = HTMLResponse(body, status_code=status)
    set_cookie(response, SIGNIN_COOKIE, csrf, secure=_secure(request), max_age=SIGNIN_LIFETIME)
    return response


@router.get("/signin")
async def signin_form(request: Request) -> Response:
    next_path = safe_next(request.query_params.get("next"))
    notice = "You are signed out." if request.query_params.get("signed_out") else None
    return _signin_page(request, next_path, notice=notice)


@router.post("/signin")
async def signin(request: Request) -> Response:
    """Open a session for an operator token; user tokens are refused."""
    try:
        form = await read_form(request)
    except FormError as exc:
        raise DashboardError(exc.status, exc.message) from None
    next_path = safe_next(form.get("next"))
    cookie = request.cookies.get(SIGNIN_COOKIE)
    if not cookie or not tokens_match(form.get(CSRF_FIELD), cookie):
        return _signin_page(
            request,
            next_path,
            error="The sign-in form expired or did not come from this page; try again.",
            status=403,
        )
    token = (form.get("token") or "").strip()
    authenticator: Authenticator = request.app.state.authenticator
    try:
        principal = await authenticator.authenticate(
            HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)
        )
    except ApiError as exc:
        return _signin_page(request, next_path, error=f"Not signed in: {exc.message}.", status=401)
    if not principal.operator:
        return _signin_page(
            request,
            next_path,
            error="Not signed in: this is a user token; the dashboard needs an operator token "
            "(stride tokens issue --user U --operator).",
            status=403,
        )
    session_id, csrf = new_secret(), new_secret()
    expires_at = datetime.now(UTC) + SESSION_LIFETIME
    if principal.expires_at is not None:
        expires_at = min(expires_at, principal.expires_at)
    await service.open_admin_session(
        database_of(request), session_digest(session_id), principal.token_id, csrf, expires_at
    )
    response = RedirectResponse(next_path, status_code=303)
    lifetime = max(timedelta(seconds=1), expires_at - datetime.now(UTC))
    set_cookie(response, SESSION_COOKIE, session_id, secure=_secure(request), max_age=lifetime)
    clear_cookie(response, SIGNIN_COOKIE)
    return response


@router.post("/signout")
async def signout(request: Request, session: Session, _: Form) -> RedirectResponse:
    await service.close_admin_session(database_of(request), session.digest)
    response = RedirectResponse("/admin/signin?signed_out=1", status_code=303)
    clear_cookie(response, SESSION_COOKIE)
    return response


# --- the backfill page -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunChart:
    chart: dict[str, Any]
    users_per_s: float | None
    jobs_per_s: float | None
    last_active: datetime | None


@dataclass(frozen=True, slots=True)
class BackfillData:
    source: str | None
    sources: list[str]  # labels with runs, newest run first
    history: Snapshot[list[service.RunSummary]] | None
    run: Snapshot[service.RunView] | None
    panel: views.RunPanel | None
    chart: Snapshot[RunChart] | None
    slow_reports: Snapshot[list[service.Report]] | None
    models: Snapshot[list[service.ModelVersionCount]] | None

    @property
    def progress(self) -> service.RunProgress | None:
        return self.run.value.progress if self.run else None

    def regions(self, csrf_token: str) -> dict[str, dict[str, Any]]:
        return {
            "run_region": {"data": self},
            "reports_region": {"data": self, "csrf_token": csrf_token},
            "models_region": {"data": self},
            "history_region": {"data": self},
        }


async def _run_chart(request: Request, progress: service.RunProgress) -> RunChart:
    dash = dashboard_of(request)
    series = dash.run_series.get(progress.job_id)
    if series is None:
        earliest = datetime.now(UTC) - timedelta(hours=RUN_CHART_HOURS)
        series = BucketSeries(RUN_BUCKET_SECONDS, start=max(progress.created_at, earliest))
        if len(dash.run_series) >= 20:
            dash.run_series.pop(next(iter(dash.run_series)))
        dash.run_series[progress.job_id] = series
    batch = await service.admin_completions(
        database_of(request), series.next_since(), series.bucket_seconds, source=progress.source
    )
    series.merge(batch)
    last_active = series.last_active()
    rates = series.recent_rates(RATE_WINDOW_SECONDS)
    until = last_active if progress.drained else None
    chart = series.chart(
        [("users/s", None, True), ("jobs/s", None, False)],
        until=until,
        smooth_buckets=RUN_SMOOTH_BUCKETS,
    )
    return RunChart(chart, rates.users_per_s, rates.jobs_per_s, last_active)


async def _backfill_data(
    request: Request, source: str | None, *, wait: float | None
) -> BackfillData:
    db = database_of(request)
    loop = asyncio.get_running_loop()
    deadline = None if wait is None else loop.time() + wait

    def left() -> float | None:
        """What is left of the page's wait: one budget for all its snapshots."""
        return None if deadline is None else max(0.0, deadline - loop.time())

    sources_snapshot = await _get(
        request, ("sources",), lambda: service.backfill_sources(db), max_age=2, wait=None
    )
    sources = sources_snapshot.value if sources_snapshot else []
    if source is None and sources:
        source = sources[0]
    # Every run with its outcome counts each run's jobs and users: seconds on a large
    # database, so it is read in the background like the slow reports.
    history_task = _get(
        request, ("history",), lambda: service.backfill_history(db), max_age=5, wait=left()
    )
    models_task = _get(
        request, ("models",), lambda: service.model_versions(db), max_age=10, wait=left()
    )
    if source is None:
        history, models = await asyncio.gather(history_task, models_task)
        return BackfillData(None, sources, history, None, None, None, None, models)
    chosen = source
    # A settled run changes only when retried or re-triggered (the dashboard's own actions
    # refresh it at once), so an open page re-reads it every half minute, not every second.
    previous = dashboard_of(request).snapshots.peek(("run", chosen))
    settled = (
        previous is not None
        and previous.value.progress is not None
        and previous.value.progress.drained
    )
    run, slow, models, history = await asyncio.gather(
        _get(
            request,
            ("run", chosen),
            lambda: service.backfill_run(db, chosen),
            max_age=SETTLED_RUN_MAX_AGE if settled else 1,
            wait=left(),
        ),
        _get(
            request,
            ("slow-reports", chosen),
            lambda: service.backfill_slow_reports(db, chosen),
            max_age=60,
            wait=0,
        ),
        models_task,
        history_task,
    )
    progress = run.value.progress if run else None
    chart = panel = None
    if progress is not None:
        chart = await _get(
            request,
            ("run-chart", progress.job_id),
            lambda: _run_chart(request, progress),
            max_age=1,
            wait=left(),
        )
        panel = views.run_panel(
            progress,
            users_per_s=chart.value.users_per_s if chart else None,
            jobs_per_s=chart.value.jobs_per_s if chart else None,
        )
    return BackfillData(source, sources, history, run, panel, chart, slow, models)


@router.get("/backfill")
async def backfill_page(request: Request, session: Session) -> HTMLResponse:
    source = _checked_source(request.query_params.get("source"))
    data = await _backfill_data(request, source, wait=PAGE_WAIT)
    verification = await service.last_verification(database_of(request), session.digest)
    live = "/admin/live/backfill" + (
        f"?{urlencode({'source': data.source})}" if data.source else ""
    )
    return await _page(
        request,
        "backfill.html",
        session,
        page="backfill",
        title="Backfill",
        live_url=live,
        data=data,
        verification=verification,
        max_verify=MAX_VERIFY_SAMPLE,
    )


@router.get("/live/backfill")
async def backfill_live(request: Request, session: Session) -> JSONResponse:
    source = _checked_source(request.query_params.get("source"))
    data = await _backfill_data(request, source, wait=LIVE_WAIT)
    regions = _fragments(templates.get_template("_backfill.html"), data.regions(session.csrf_token))
    charts = {"run": data.chart.value.chart} if data.chart else {}
    return _live(regions, charts)


def _live(regions: dict[str, str], charts: dict[str, Any]) -> JSONResponse:
    return JSONResponse(
        {"as_of": views.iso(datetime.now(UTC)), "regions": regions, "charts": charts}
    )


@router.get("/backfill/cancel")
async def cancel_confirm(request: Request, session: Session) -> HTMLResponse:
    source = _checked_source(request.query_params.get("source"))
    if source is None:
        raise DashboardError(422, "Which backfill? The link names no source.")
    data = await _backfill_data(request, source, wait=PAGE_WAIT)
    return await _page(
        request, "cancel.html", session, page="backfill", title="Cancel a backfill", data=data
    )


async def _refresh_backfill(request: Request, source: str | None) -> None:
    """After an action: drop what it changed and read it again before redirecting, so the
    page the redirect leads to shows the result at once (the action, not the page, waits)."""
    dashboard_of(request).snapshots.invalidate(
        lambda key: (
            key[0] in ("sources", "history", "models", "run-chart", "queue")
            or (key[0] in ("run", "slow-reports") and key[1] == source)
        )
    )
    await _backfill_data(request, source, wait=None)


@router.post("/backfill/cancel")
async def cancel_backfill(request: Request, session: Session, form: Form) -> RedirectResponse:
    source = _checked_source(form.get("source"))
    if source is None:
        raise DashboardError(422, "Which backfill? The form names no source.")
    result = await service.admin_cancel(database_of(request), source)
    await _refresh_backfill(request, source)
    jobs = f"{result.jobs_cancelled:,} pending job{'s' if result.jobs_cancelled != 1 else ''}"
    message = (
        f"Cancelled {jobs} of {source}; {result.runs_stopped} running controller"
        f"{'s' if result.runs_stopped != 1 else ''} asked to stop after the current chunk."
    )
    return await _redirect_with(request, session, _backfill_url(source), "ok", message)


@router.post("/backfill/trigger")
async def trigger_backfill(request: Request, session: Session, form: Form) -> RedirectResponse:
    try:
        source = clean_text(form.get("source"), max_chars=MAX_SOURCE_CHARS)
        max_rate = positive_number(form.get("max_rate"), name="The maximum rate")
        if max_rate is not None and max_rate < MIN_MAX_RATE:
            raise ValueError(f"the maximum rate is at least {MIN_MAX_RATE} users per second")
    except ValueError as exc:
        return await _redirect_with(
            request, session, _backfill_url(None, "trigger"), "error", f"Not triggered: {exc}."
        )
    if source is None:
        return await _redirect_with(
            request,
            session,
            _backfill_url(None, "trigger"),
            "error",
            "Give the run a source label.",
        )
    try:
        result = await service.admin_trigger(database_of(request), source, max_rate)
    except service.BackfillInputError as exc:
        return await _redirect_with(
            request, session, _backfill_url(None, "trigger"), "error", f"Not triggered: {exc}"
        )
    await _refresh_backfill(request, source)
    if result.outcome == "enqueued":
        kind, message = (
            "ok",
            (f"Triggered run {result.job_id} of {source}: {result.users:,} users snapshotted."),
        )
    elif result.outcome == "in_flight":
        kind, message = (
            "error",
            (f"Not triggered: run {result.job_id} of {source} is already in flight."),
        )
    else:
        kind, message = "error", "Not triggered: there are no users to backfill."
    return await _redirect_with(request, session, _backfill_url(source), kind, message)


@router.post("/backfill/verify")
async def verify_sample(request: Request, session: Session, form: Form) -> RedirectResponse:
    source = _checked_source(form.get("source"))
    try:
        sample = whole_number(form.get("sample"), name="The sample", low=1, high=MAX_VERIFY_SAMPLE)
    except ValueError as exc:
        return await _redirect_with(
            request, session, _backfill_url(source, "verify"), "error", f"Not verified: {exc}."
        )
    db = database_of(request)
    result = await service.admin_verify(db, sample)
    drifts = [d.as_dict() for d in result.drifts]
    await service.save_verification(
        db,
        session.digest,
        {
            "at": views.iso(datetime.now(UTC)),
            "sample": sample,
            "users_checked": result.users_checked,
            "projections_checked": result.projections_checked,
            "drifts": drifts[:200],
            "drift_count": len(drifts),
        },
    )
    verdict = (
        f"{len(drifts):,} drifting projection{'s' if len(drifts) != 1 else ''}"
        if drifts
        else "no drift"
    )
    kind = "error" if drifts else "ok"
    message = (
        f"Verified {result.users_checked:,} random users "
        f"({result.projections_checked:,} projections): {verdict}."
    )
    return await _redirect_with(request, session, _backfill_url(source, "verify"), kind, message)


@router.post("/backfill/reports")
async def refresh_reports(request: Request, session: Session, form: Form) -> RedirectResponse:
    """Recompute the slow runbook reports now rather than at their next refresh."""
    source = _checked_source(form.get("source"))
    if source is None:
        raise DashboardError(422, "Which backfill? The form names no source.")
    dashboard_of(request).snapshots.invalidate(lambda key: key == ("slow-reports", source))
    db = database_of(request)
    await _get(
        request,
        ("slow-reports", source),
        lambda: service.backfill_slow_reports(db, source),
        max_age=60,
        wait=0,
    )
    return await _redirect_with(
        request,
        session,
        _backfill_url(source, "reports"),
        "ok",
        "Recomputing the coverage and lag reports; they appear here when done.",
    )


# --- the queue page --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueData:
    overview: Snapshot[service.QueueOverview] | None
    chart: Snapshot[dict[str, Any]] | None

    def regions(self, csrf_token: str) -> dict[str, dict[str, Any]]:
        return {
            "summary_region": {"data": self},
            "counts_region": {"data": self},
            "workers_region": {"data": self},
            "dead_region": {"data": self, "csrf_token": csrf_token},
        }

    @property
    def columns_and_rows(self) -> tuple[list[str], list[views.CountRow]]:
        return views.count_table(self.overview.value.counts if self.overview else [])

    @property
    def totals(self) -> dict[str, int]:
        return views.totals_by_status(self.overview.value.counts if self.overview else [])


async def _queue_chart(request: Request) -> dict[str, Any]:
    dash = dashboard_of(request)
    if dash.queue_series is None:
        dash.queue_series = BucketSeries(
            QUEUE_BUCKET_SECONDS,
            start=datetime.now(UTC) - timedelta(minutes=QUEUE_CHART_MINUTES),
            window_seconds=QUEUE_CHART_MINUTES * 60,
        )
    series = dash.queue_series
    batch = await service.admin_completions(
        database_of(request), series.next_since(), series.bucket_seconds
    )
    series.merge(batch)
    return series.chart(views.chart_lines(series.job_types()))


async def _queue_data(request: Request, *, wait: float | None) -> QueueData:
    db = database_of(request)
    overview, chart = await asyncio.gather(
        _get(request, ("queue",), lambda: service.admin_queue(db), max_age=1, wait=wait),
        _get(request, ("queue-chart",), lambda: _queue_chart(request), max_age=1, wait=wait),
    )
    return QueueData(overview, chart)


@router.get("/queue")
async def queue_page(request: Request, session: Session) -> HTMLResponse:
    data = await _queue_data(request, wait=PAGE_WAIT)
    return await _page(
        request,
        "queue.html",
        session,
        page="queue",
        title="Queue",
        live_url="/admin/live/queue",
        data=data,
    )


@router.get("/live/queue")
async def queue_live(request: Request, session: Session) -> JSONResponse:
    data = await _queue_data(request, wait=LIVE_WAIT)
    regions = _fragments(templates.get_template("_queue.html"), data.regions(session.csrf_token))
    return _live(regions, {"queue": data.chart.value} if data.chart else {})


async def _refresh_queue(request: Request) -> None:
    """After an action: read the queue again before redirecting (see _refresh_backfill)."""
    dashboard_of(request).snapshots.invalidate(
        lambda key: key[0] in ("queue", "run", "history", "job")
    )
    await _queue_data(request, wait=None)


@router.post("/queue/retry")
async def retry_one(request: Request, session: Session, form: Form) -> RedirectResponse:
    try:
        job_id = whole_number(form.get("job_id"), name="The job id", low=1, high=2**63 - 1)
    except ValueError as exc:
        return await _redirect_with(request, session, "/admin/queue#dead", "error", f"{exc}.")
    retried = await service.admin_retry_job(database_of(request), job_id)
    await _refresh_queue(request)
    back = f"/admin/jobs/{job_id}" if form.get("back") == "job" else "/admin/queue#dead"
    if retried:
        return await _redirect_with(request, session, back, "ok", f"Job {job_id} is pending again.")
    return await _redirect_with(
        request,
        session,
        back,
        "error",
        f"Job {job_id} was not retried: it is no longer dead or failed, or another job with "
        "its deduplication key is already pending or running.",
    )


@router.post("/queue/retry-type")
async def retry_type(request: Request, session: Session, form: Form) -> RedirectResponse:
    try:
        job_type = clean_text(form.get("job_type"), max_chars=200)
    except ValueError as exc:
        return await _redirect_with(request, session, "/admin/queue#dead", "error", f"{exc}.")
    if job_type is None:
        return await _redirect_with(
            request, session, "/admin/queue#dead", "error", "Which job type? None was given."
        )
    count = await service.admin_retry_type(database_of(request), job_type)
    await _refresh_queue(request)
    return await _redirect_with(
        request,
        session,
        "/admin/queue#dead",
        "ok" if count else "error",
        f"Retried {count:,} dead or failed {job_type} job{'s' if count != 1 else ''}.",
    )


# --- one job ------------------------------------------------------------------------------


@router.get("/jobs/{job_id}")
async def job_page(request: Request, session: Session, job_id: str) -> HTMLResponse:
    try:
        number = whole_number(job_id, name="A job id", low=1, high=2**63 - 1)
    except ValueError as exc:
        raise DashboardError(422, f"{exc}.") from None
    detail = await service.admin_job(database_of(request), number)
    if detail is None:
        raise DashboardError(404, f"There is no job {number} (it may have been pruned).")
    return await _page(
        request, "job.html", session, page="queue", title=f"Job {number}", detail=detail
    )


# --- the user page ---------------------------------------------------------------------------


def _user_id(value: str | None) -> UUID | None:
    if value is None or not value.strip():
        return None
    try:
        return UUID(value.strip())
    except ValueError:
        raise DashboardError(422, "That is not a user id (a UUID).") from None


@router.get("/users")
async def user_page(request: Request, session: Session) -> HTMLResponse:
    raw = request.query_params.get("user_id")
    user_id = _user_id(raw)
    overview = await service.user_overview(database_of(request), user_id) if user_id else None
    live = f"/admin/live/users?{urlencode({'user_id': str(user_id)})}" if user_id else None
    status = 404 if overview is not None and overview.user is None else 200
    return await _page(
        request,
        "user.html",
        session,
        status=status,
        page="users",
        title=f"User {user_id}" if user_id else "Users",
        live_url=live,
        user_id=user_id,
        overview=overview,
    )


@router.get("/live/users")
async def user_live(request: Request, session: Session) -> JSONResponse:
    user_id = _user_id(request.query_params.get("user_id"))
    if user_id is None:
        raise DashboardError(422, "Which user? No user id was given.")
    overview = await service.user_overview(database_of(request), user_id)
    regions = _fragments(
        templates.get_template("_user.html"),
        {
            "projections_region": {"overview": overview},
            "events_region": {"overview": overview},
            "jobs_region": {"overview": overview},
        },
    )
    return _live(regions, {})


# --- installation ------------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    """Serve the dashboard from `app` at /admin."""
    app.state.dashboard = Dashboard()
    # Compile every template now rather than in the first request that needs it.
    for name in templates.list_templates(extensions=["html"]):
        templates.get_template(name)
    app.include_router(router)
    static_dir = resources.files(__package__).joinpath("static")
    app.mount("/admin/static", StaticFiles(directory=str(static_dir)), name="admin-static")
    app.add_middleware(DashboardHeaders)

    async def sign_in_required(request: Request, exc: Exception) -> Response:
        path = request.url.path
        if path.startswith("/admin/live/"):
            response: Response = JSONResponse(
                {"error": "signed_out", "message": "sign in again"}, status_code=401
            )
        elif request.method in ("GET", "HEAD"):
            target = path + (f"?{request.url.query}" if request.url.query else "")
            response = RedirectResponse(
                f"/admin/signin?{urlencode({'next': target})}", status_code=303
            )
        else:
            response = _error_page(403, "Your session has ended. Sign in again, then retry.")
        if request.cookies.get(SESSION_COOKIE):
            clear_cookie(response, SESSION_COOKIE)
        return response

    async def dashboard_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DashboardError)
        if request.url.path.startswith("/admin/live/"):
            return JSONResponse({"error": "bad_request", "message": exc.message}, exc.status)
        return _error_page(exc.status, exc.message)

    app.add_exception_handler(SignInRequired, sign_in_required)
    app.add_exception_handler(DashboardError, dashboard_error)


def _error_page(status: int, message: str) -> HTMLResponse:
    body = templates.get_template("error.html").render(
        session=None,
        csrf_token="",
        flash=None,
        now=datetime.now(UTC),
        title="Error",
        status=status,
        message=message,
    )
    return HTMLResponse(body, status_code=status)
