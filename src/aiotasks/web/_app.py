"""The console as an ASGI app (Starlette): pages, their JSON twins, the controls, access rules.

Pages are rendered on the server with Jinja2 (autoescaped: a task name or an
error text holding ``<script>`` is shown as text) and refreshed in place by a
few lines of JavaScript (``static/console.js``) that fetch the page's live
part every ``refresh`` seconds. Every page has a JSON twin under ``api/``
holding the documents the CLI's ``--json`` prints, and each refresh reads
Redis in bounded work: one read script per task (see ``aiotasks._reading``).

Access: read-only unless a ``token`` is given. Then the controls are shown to
a browser that logged in with it (a cookie holding an HMAC of the token, never
the token itself) or to a client sending ``Authorization: Bearer TOKEN``.
State-changing requests are POSTs with a CSRF token (a per-browser random
cookie echoed in the form or the ``X-CSRF-Token`` header, double-submit) and a
same-origin ``Origin`` when the browser sends one; anything else gets 403.
Every response carries a strict Content-Security-Policy (scripts and styles
from the console itself only, no inline script), ``X-Frame-Options: DENY``,
``nosniff`` and ``Referrer-Policy: same-origin`` (with ``no-referrer`` a browser
sends ``Origin: null`` on its own form posts, which the origin check refuses).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import jinja2
from jinja2.filters import do_truncate, do_urlencode
from markupsafe import Markup, escape
from redis import exceptions as rex
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiotasks._chain import Chain, Node, resolve_chain
from aiotasks._clock import current_clock
from aiotasks._context import resolve
from aiotasks._errors import AioTasksError, InvalidInput, RedisUnavailable, TriggerExpired
from aiotasks._keys import parse_date, parse_run_key
from aiotasks._reading import (
    outcome_of,
    read_date_runs,
    read_history,
    read_overview,
    read_status,
    schedule_keys_between,
    unique_nodes,
)
from aiotasks._records import Cell, CellState, RunRecord
from aiotasks._schedule import Schedule
from aiotasks._store import AnyRedis, Store
from aiotasks._task import Task
from aiotasks._views import cell_mark, grid_json
from aiotasks._wire import describe

from . import _adapter as controls

__all__ = ["console"]

logger = logging.getLogger("aiotasks.web")

_HERE: Final = Path(__file__).parent
_STATIC: Final = {"console.css": "text/css", "console.js": "text/javascript"}
#: The comments base.html puts around a page's live part (what a refresh replaces).
_LIVE: Final = ("<!--live-->", "<!--/live-->")
SESSION_COOKIE: Final = "aiotasks_session"
CSRF_COOKIE: Final = "aiotasks_csrf"
#: Days the grid shows by default (ending today) and at most.
GRID_DAYS: Final = 14
MAX_GRID_DAYS: Final = 366
#: Slots a sub-daily schedule's grid shows at most (the newest of the range).
GRID_SLOTS: Final = 48
#: History page size, and the most runs per task a history page reads.
PAGE_SIZE: Final = 50
MAX_HISTORY: Final = 2000
#: Seconds a "run now" waits for a serving replica to take the request.
TRIGGER_EXPIRES: Final = 10.0
OUTCOMES: Final = ("success", "failed", "cancelled", "running", "abandoned", "missed", "paused")
HEADERS: Final = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
)


class _Refused(Exception):
    """A request the console answers with ``status`` and one line, as text or JSON."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _SecurityHeaders:
    """Adds :data:`HEADERS` to every response (pages, JSON, static files, errors)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message["headers"] = kept + list(HEADERS)
            await send(message)

        await self.app(scope, receive, sending)


def _fleet(target: Any) -> tuple[list[Schedule], list[Chain]]:
    """The schedules and the standalone chains of a console's target."""
    if isinstance(target, Schedule):
        return [target], []
    if isinstance(target, Chain):
        return [], [target]
    if isinstance(target, Task):
        return [], [Chain([target])]
    items = list(target)
    if items and all(isinstance(item, Schedule | Chain) for item in items):
        return [i for i in items if isinstance(i, Schedule)], [i for i in items if isinstance(i, Chain)]
    return [], [resolve_chain(items)]


@dataclass(frozen=True, slots=True)
class _Section:
    """One grid section: a schedule's (or a chain's) tasks x its run keys."""

    schedule: str | None
    rule: str | None
    keys: list[str]
    cells: dict[str, dict[str, Cell]]

    def to_json(self) -> dict[str, Any]:
        """``{"schedule", "rule", "dates", "tasks"}``: ``status --from --to --json``'s document, named."""
        return {"schedule": self.schedule, "rule": self.rule, **grid_json(self.keys, self.cells)}


@dataclass(frozen=True)
class _Console:
    """What one console serves: its target, its client and settings; the reads each page makes."""

    schedules: list[Schedule]
    chains: list[Chain]
    nodes: list[Node]
    redis: AnyRedis | None
    namespace: str | None
    session: str | None
    refresh: float
    title: str
    templates: jinja2.Environment

    # -- reading ---------------------------------------------------------------------------------

    def store(self) -> tuple[Store, str | None]:
        store, namespace, _ = resolve(self.redis)
        return store, self.namespace if self.namespace is not None else namespace

    def schedule(self, name: str) -> Schedule:
        for schedule in self.schedules:
            if schedule.name == name:
                return schedule
        raise _Refused(400, f"no schedule named {name[:100]!r} in this console")

    def node(self, task: str) -> Node:
        for node in self.nodes:
            if node.id == task:
                return node
        raise _Refused(400, f"no task {task[:100]!r} in this console")

    def chain_of(self, task: str) -> Chain:
        for chain in [*(s.chain for s in self.schedules), *self.chains]:
            if task in chain.nodes:
                return chain
        raise _Refused(400, f"no task {task[:100]!r} in this console")

    async def overview(self) -> dict[str, Any]:
        store, namespace = self.store()
        # Sent together: the door coalesces them into one batch.
        found, paused = await asyncio.gather(
            read_overview(store, self.schedules, self.nodes, namespace=namespace, now=current_clock().now()),
            controls.paused_tasks(
                [node.task_name for node in self.nodes], redis=self.redis, namespace=namespace
            ),
        )
        document = found.to_json()
        document["tasks"] = [
            {
                "task": node.id,
                "schedules": [s.name for s in self.schedules if node.id in s.chain.nodes],
                "paused": paused.get(node.task_name),
            }
            for node in self.nodes
        ]
        return document

    async def grid(self, first: dt.date, last: dt.date) -> list[_Section]:
        """One section per schedule (its run keys), then one per standalone chain (dates); every
        section's GRID scripts sent together."""
        store, namespace = self.store()
        parts: list[tuple[str | None, str | None, list[Node], list[str]]] = [
            (str(s.name), s.rule, list(s.chain), schedule_keys_between(s, first, last, GRID_SLOTS))
            for s in self.schedules
        ]
        parts += [
            (None, None, list(c), schedule_keys_between(None, first, last, GRID_SLOTS)) for c in self.chains
        ]
        grids = await asyncio.gather(
            *(read_status(store, nodes, keys, namespace=namespace) for _, _, nodes, keys in parts)
        )
        return [
            _Section(name, rule, keys, grid) for (name, rule, _, keys), grid in zip(parts, grids, strict=True)
        ]

    async def history(self, tasks: Sequence[str], outcome: str | None, page: int) -> dict[str, Any]:
        store, namespace = self.store()
        nodes = [self.node(task) for task in tasks] if tasks else self.nodes
        wanted = (page + 1) * PAGE_SIZE + 1  # one more: is there a next page?
        last = MAX_HISTORY if outcome else min(wanted, MAX_HISTORY)
        runs = await read_history(
            store, nodes, namespace=namespace, last=last, outcomes=(outcome,) if outcome else ()
        )
        shown = runs[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
        return {
            "runs": [run.to_json() for run in shown],
            "page": page,
            "more": len(runs) > (page + 1) * PAGE_SIZE,
            "task": list(tasks),
            "outcome": outcome,
        }

    async def runs(self, task: str, key: str) -> dict[str, Any]:
        store, namespace = self.store()
        node = self.node(task)
        cells, records, paused = await asyncio.gather(
            read_status(store, [node], [key], namespace=namespace),
            read_date_runs(store, node.task_name, key, namespace=namespace),
            controls.paused_tasks([node.task_name], redis=self.redis, namespace=namespace),
        )
        cell = cells[node.id][key]
        return {
            "task": node.id,
            "date": key,
            "cell": cell.to_json(),
            "paused": paused.get(node.task_name),
            "runs": [_run_json(run) for run in records],
            "schedules": [s.name for s in self.schedules if node.id in s.chain.nodes and _key_fits(s, key)],
        }


def _key_fits(schedule: Schedule, key: str) -> bool:
    return schedule.daily == (len(key) == 8)


def _run_json(run: RunRecord) -> dict[str, Any]:
    document = run.to_json()
    document["outcome"] = outcome_of(run)
    return document


# -- request helpers ------------------------------------------------------------------------------


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _session_of(token: str) -> str:
    """The login cookie's value: an HMAC of the token (the token itself never leaves the server)."""
    return hmac.new(token.encode(), b"aiotasks web console session v1", hashlib.sha256).hexdigest()


def _authorized(console: _Console, request: Request) -> bool:
    if console.session is None:
        return False
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return hmac.compare_digest(_session_of(header[7:].strip()), console.session)
    cookie = request.cookies.get(SESSION_COOKIE, "")
    return hmac.compare_digest(cookie.encode(), console.session.encode())


def _check_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin is None:  # not sent on same-origin GETs by every browser, nor by scripts
        return
    if urlsplit(origin).netloc != request.headers.get("host", ""):
        raise _Refused(403, "cross-origin request refused")


def _check_csrf(request: Request, form: Form) -> None:
    """Double-submit: the form's (or header's) token must equal this browser's CSRF cookie."""
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        return  # not a browser's ambient credential: nothing to forge
    _check_origin(request)
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = str(form.get("csrf") or request.headers.get("x-csrf-token") or "")
    if not cookie or not hmac.compare_digest(cookie.encode(), sent.encode()):
        raise _Refused(403, "missing or wrong CSRF token: reload the page and try again")


#: A control's form (``application/x-www-form-urlencoded``: no multipart parser needed).
Form = dict[str, str]
#: The largest form body read (a control's fields are a few short strings).
MAX_FORM: Final = 16_384


async def _form(request: Request) -> Form:
    """The request's urlencoded form (the last value of a repeated field), at most ``MAX_FORM`` bytes."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise _Refused(413, "form too large")
    if "multipart/" in request.headers.get("content-type", ""):
        raise _Refused(415, "send the form urlencoded")
    return dict(parse_qsl(body.decode(errors="replace"), keep_blank_values=True))


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _day(value: str | None, default: dt.date) -> dt.date:
    if not value:
        return default
    text = value.replace("-", "")
    try:
        parsed = parse_date(text)
    except InvalidInput as exc:
        raise _Refused(400, str(exc)) from None
    return dt.date(int(parsed[:4]), int(parsed[4:6]), int(parsed[6:]))


def _when(iso: str | None) -> str:
    """``2026-12-06T03:15:00.123Z`` as ``2026-12-06 03:15:00``."""
    return iso.replace("T", " ")[:19] if iso else ""


def _ms_age(iso: str | None, now: dt.datetime) -> str:
    if not iso:
        return ""
    then = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    seconds = int((now - then).total_seconds())
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def _grid_rows(
    env: jinja2.Environment, keys: Sequence[str], cells: Mapping[str, Mapping[str, Cell]], root: str
) -> Markup:
    """The grid's rows, one ``<tr>`` per task, a ``<td>`` per key: what a Jinja loop over every
    cell made, to the byte (50 tasks x 90 dates are 4,500 cells: 30 ms there, a few here).

    Every text from outside is escaped as the template escapes it (``markupsafe.escape``): a
    task name, a key, an error holding ``<script>`` read as text; an error is cut by Jinja's own
    ``truncate`` filter.
    """
    marks = {state.value: (escape(state.value), escape(cell_mark(state))) for state in CellState}
    shown = [(key, escape(key)) for key in keys]
    out: list[str] = []
    for task, row in cells.items():
        name = escape(task)
        link = escape(f"{root}/runs?task={do_urlencode(task)}&key=")
        out.append(f'\n<tr><th class="task">{name}</th>\n')
        for key, key_text in shown:
            cell = row[key]
            state, mark = marks[cell.state.value]
            title = f"{name} {key_text}: {state}"
            run = cell.run
            if run is not None and run.error and cell.state is not CellState.COMPLETED:
                title += f" - {escape(do_truncate(env, run.error, 200))}"
            out.append(
                f'<td class="cell s-{state}" data-task="{name}" data-key="{key_text}" data-state="{state}">'
                f'<a href="{link}{key_text}" title="{title}">{mark}</a></td>'
            )
        out.append("\n</tr>\n")
    return Markup("".join(out))


def _who(value: str | None) -> str:
    """``host:pid|ms`` (who paused) as ``host:pid``."""
    return value.partition("|")[0] if value else ""


# -- the app --------------------------------------------------------------------------------------


def console(
    target: Any,
    *,
    redis: AnyRedis | None = None,
    namespace: str | None = None,
    token: str | None = None,
    refresh: float = 5.0,
    title: str = "aiotasks",
) -> Starlette:
    """The web console of ``target`` as an ASGI app (Starlette), to serve or to mount.

    ::

        app = Starlette(routes=[Mount("/tasks", aiotasks.web.console(SCHEDULES, redis=client))])

    :param target: a :class:`~aiotasks.Schedule`, a list of them (the overview,
        the controls and a grid per schedule), a chain (any form
        :func:`~aiotasks.run_chain` takes: its grid by date), or a list of
        schedules and :class:`Chain` objects.
    :param redis: the client (as :func:`~aiotasks.run_chain`; default: from the environment).
    :param namespace: the key prefix (default ``AIOTASKS_NAMESPACE``).
    :param token: the secret that unlocks the controls; None (the default): read-only,
        no control is shown and every control request gets 403.
    :param refresh: seconds between two refreshes of an open page.
    :param title: shown in the pages' header and title.
    :raises InvalidChain: the target is not a valid chain or list of schedules.
    """
    if isinstance(refresh, bool) or not isinstance(refresh, int | float) or not 0.5 <= refresh <= 3600:
        raise InvalidInput(f"refresh must be 0.5 to 3600 seconds, not {refresh!r}", refresh)
    if token is not None and not token.strip():
        raise InvalidInput("an empty token would let anyone in: give a secret, or None for read-only", "")
    schedules, chains = _fleet(target)
    templates = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
    )
    templates.filters.update(when=_when, who=_who, mark=cell_mark)
    templates.globals["marks"] = {state.value: cell_mark(state) for state in CellState}
    templates.globals["grid_rows"] = functools.partial(_grid_rows, templates)
    state = _Console(
        schedules=schedules,
        chains=chains,
        nodes=unique_nodes([*(s.chain for s in schedules), *chains]),
        redis=redis,
        namespace=namespace,
        session=_session_of(token.strip()) if token is not None else None,
        refresh=float(refresh),
        title=title,
        templates=templates,
    )
    return _build(state)


def _build(console: _Console) -> Starlette:
    def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        context.update(
            root=_root(request),
            title=console.title,
            refresh=console.refresh,
            controls=_authorized(console, request),
            token_set=console.session is not None,
            csrf=csrf,
            store=describe(console.redis) if console.redis is not None else "Redis from the environment",
            path=request.url.path,
        )
        body = console.templates.get_template(name).render(context)
        if request.headers.get("x-aiotasks-fragment") == "1":
            # A refresh: only the live part (between the markers base.html puts around it).
            start, end = body.find(_LIVE[0]), body.rfind(_LIVE[1])
            if start >= 0 and end > start:
                body = body[start + len(_LIVE[0]) : end]
        response = HTMLResponse(body, status_code=status)
        if CSRF_COOKIE not in request.cookies:
            response.set_cookie(
                CSRF_COOKIE,
                csrf,
                httponly=True,
                samesite="strict",
                path=_root(request) or "/",
                secure=request.url.scheme == "https",
            )
        return response

    def page(
        name: str, read: Callable[[Request], Awaitable[Any]], to_json: Callable[[Any], Any] = lambda doc: doc
    ) -> tuple[Callable[[Request], Awaitable[Response]], Callable[[Request], Awaitable[Response]]]:
        """A page and its JSON twin from one reader; ``to_json`` makes the twin's document of
        what the reader returns (the page may render richer objects: the grid's cells)."""

        async def html(request: Request) -> Response:
            try:
                document = await read(request)
            except _Refused as exc:
                return render(request, "error.html", exc.status, message=str(exc))
            except (RedisUnavailable, rex.RedisError) as exc:
                return render(request, "error.html", 503, message=_redis_trouble(exc))
            now = current_clock().now()
            return render(request, name, doc=document, now=now, age=lambda iso: _ms_age(iso, now))

        async def api(request: Request) -> Response:
            try:
                return JSONResponse(to_json(await read(request)))
            except _Refused as exc:
                return JSONResponse({"error": str(exc)}, status_code=exc.status)
            except (RedisUnavailable, rex.RedisError) as exc:
                return JSONResponse({"error": _redis_trouble(exc)}, status_code=503)

        return html, api

    async def overview(request: Request) -> dict[str, Any]:
        return await console.overview()

    async def grid(request: Request) -> dict[str, Any]:
        today = current_clock().now().date()
        last = _day(request.query_params.get("to"), today)
        first = _day(request.query_params.get("from"), last - dt.timedelta(days=GRID_DAYS - 1))
        if first > last:
            raise _Refused(400, f"the range starts ({first}) after it ends ({last})")
        if (last - first).days + 1 > MAX_GRID_DAYS:
            raise _Refused(400, f"at most {MAX_GRID_DAYS} days at once, not {(last - first).days + 1}")
        return {
            "from": first.strftime("%Y%m%d"),
            "to": last.strftime("%Y%m%d"),
            "sections": await console.grid(first, last),
            "legend": [state.value for state in CellState],
        }

    def grid_document(found: dict[str, Any]) -> dict[str, Any]:
        return {**found, "sections": [section.to_json() for section in found["sections"]]}

    async def history(request: Request) -> dict[str, Any]:
        tasks = [t for t in request.query_params.getlist("task") if t]
        outcome = request.query_params.get("outcome") or None
        if outcome is not None and outcome not in OUTCOMES:
            raise _Refused(400, f"no outcome {outcome[:40]!r} (one of {', '.join(OUTCOMES)})")
        try:
            page_number = int(request.query_params.get("page") or 0)
        except ValueError:
            raise _Refused(400, "page must be a whole number") from None
        if not 0 <= page_number < MAX_HISTORY // PAGE_SIZE:
            raise _Refused(400, f"page must be from 0 to {MAX_HISTORY // PAGE_SIZE - 1}")
        document = await console.history(tasks, outcome, page_number)
        document["outcomes"] = list(OUTCOMES)
        document["all_tasks"] = [node.id for node in console.nodes]
        return document

    async def runs(request: Request) -> dict[str, Any]:
        task = request.query_params.get("task") or ""
        try:
            key = parse_run_key(request.query_params.get("key") or "")
        except InvalidInput as exc:
            raise _Refused(400, str(exc)) from None
        return await console.runs(task, key)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return Response("not found", status_code=404, media_type="text/plain")
        return FileResponse(_HERE / "static" / name, media_type=_STATIC[name])

    async def login_page(request: Request) -> Response:
        return render(request, "login.html")

    async def login(request: Request) -> Response:
        try:
            form = await _form(request)
            _check_csrf(request, form)
        except _Refused as exc:
            return render(request, "error.html", exc.status, message=str(exc))
        sent = str(form.get("token") or "").strip()
        if console.session is None or not hmac.compare_digest(_session_of(sent), console.session):
            logger.warning("web console: a login with a wrong token from %s", _peer(request))
            return render(request, "login.html", 403, failed=True)
        response = RedirectResponse(f"{_root(request)}/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            console.session,
            httponly=True,
            samesite="strict",
            path=_root(request) or "/",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(request: Request) -> Response:
        try:
            form = await _form(request)
            _check_csrf(request, form)
        except _Refused as exc:
            return render(request, "error.html", exc.status, message=str(exc))
        response = RedirectResponse(f"{_root(request)}/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=_root(request) or "/")
        return response

    async def control(request: Request) -> Response:
        action = request.path_params["action"]
        try:
            form = await _form(request)
            if console.session is None:
                raise _Refused(403, "read-only console: no token is configured, controls are off")
            if not _authorized(console, request):
                raise _Refused(403, "log in with the console's token to use the controls")
            _check_csrf(request, form)
            act = _ACTIONS.get(action)
            if act is None:
                raise _Refused(404, f"no control {action[:40]!r}")
            fields = {k: str(v) for k, v in form.items() if k not in ("csrf", "confirmed")}
            if form.get("confirmed") != "1" and not _wants_json(request):
                return render(request, "confirm.html", action=action, fields=fields)
            message = await act(console, form)
        except _Refused as exc:
            if _wants_json(request):
                return JSONResponse({"ok": False, "message": str(exc)}, status_code=exc.status)
            return render(request, "error.html", exc.status, message=str(exc))
        except InvalidInput as exc:
            return _said(request, render, 400, False, str(exc))
        except TriggerExpired as exc:
            return _said(request, render, 409, False, str(exc))
        except (RedisUnavailable, rex.RedisError) as exc:
            return _said(request, render, 503, False, _redis_trouble(exc))
        except AioTasksError as exc:
            return _said(request, render, 409, False, str(exc))
        logger.info("web console: %s by %s: %s", action, _peer(request), message)
        return _said(request, render, 200, True, message)

    overview_html, overview_api = page("overview.html", overview)
    grid_html, grid_api = page("grid.html", grid, grid_document)
    history_html, history_api = page("history.html", history)
    runs_html, runs_api = page("runs.html", runs)
    app = Starlette(
        routes=[
            Route("/", overview_html),
            Route("/grid", grid_html),
            Route("/history", history_html),
            Route("/runs", runs_html),
            Route("/api/overview", overview_api),
            Route("/api/grid", grid_api),
            Route("/api/history", history_api),
            Route("/api/runs", runs_api),
            Route("/static/{name}", static),
            Route("/login", login_page),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/control/{action}", control, methods=["POST"]),
        ]
    )
    app.add_middleware(_SecurityHeaders)
    return app


def _said(request: Request, render: Callable[..., Response], status: int, ok: bool, message: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"ok": ok, "message": message}, status_code=status)
    return render(request, "done.html", status, ok=ok, message=message)


def _peer(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "?"


def _redis_trouble(exc: BaseException) -> str:
    """What a read or control met, for the page: the library's own errors hold no password;
    redis-py's are named by class only (their text may echo a URL)."""
    if isinstance(exc, AioTasksError):
        return f"Redis trouble: {exc}"
    return f"Redis trouble: {type(exc).__name__}"


# -- the controls: each checks its fields against the console's target before acting -----------


def _field(form: Form, name: str) -> str:
    value = str(form.get(name) or "").strip()
    if not value:
        raise _Refused(400, f"missing field {name!r}")
    return value


def _kind(form: Form, console: _Console) -> tuple[str, str]:
    kind, name = _field(form, "kind"), _field(form, "name")
    if kind == "schedule":
        return kind, str(console.schedule(name).name)
    if kind == "task":
        return kind, console.node(name).task_name
    raise _Refused(400, f"kind must be schedule or task, not {kind[:20]!r}")


async def _pause(console: _Console, form: Form) -> str:
    kind, name = _kind(form, console)
    _, namespace = console.store()
    changed = await controls.pause(kind, name, redis=console.redis, namespace=namespace)
    return f"{kind} {name} {'paused' if changed else 'was already paused'}"


async def _resume(console: _Console, form: Form) -> str:
    kind, name = _kind(form, console)
    _, namespace = console.store()
    changed = await controls.resume(kind, name, redis=console.redis, namespace=namespace)
    return f"{kind} {name} {'resumed' if changed else 'was not paused'}"


async def _trigger(console: _Console, form: Form) -> str:
    schedule = console.schedule(_field(form, "schedule"))
    key = str(form.get("key") or "").strip() or None
    _, namespace = console.store()
    done = await controls.run_now(
        schedule,
        key,
        force=form.get("force") == "1",
        expires=TRIGGER_EXPIRES,
        redis=console.redis,
        namespace=namespace,
    )
    return f"schedule {done.schedule} {done.key}: taken by {done.taken_by}"


async def _clear(console: _Console, form: Form) -> str:
    task = _field(form, "task")
    node = console.node(task)
    chain = console.chain_of(task)
    try:
        key = parse_run_key(_field(form, "key"))
    except InvalidInput as exc:
        raise _Refused(400, str(exc)) from None
    _, namespace = console.store()
    downstream = form.get("downstream") == "1"
    removed = await controls.clear(
        chain, key, [node.id], downstream=downstream, redis=console.redis, namespace=namespace
    )
    said = (
        f"{key}: removed the success markers of {', '.join(removed)}"
        if removed
        else (f"{key}: no success marker to remove")
    )
    schedule_name = str(form.get("run_now") or "")
    if schedule_name:
        schedule = console.schedule(schedule_name)
        done = await controls.run_now(
            schedule, key, force=False, expires=TRIGGER_EXPIRES, redis=console.redis, namespace=namespace
        )
        said += f"; run now: taken by {done.taken_by}"
    return said


async def _cancel(console: _Console, form: Form) -> str:
    node = console.node(_field(form, "task"))
    try:
        key = parse_run_key(_field(form, "key"))
    except InvalidInput as exc:
        raise _Refused(400, str(exc)) from None
    _, namespace = console.store()
    if await controls.cancel(node.task_name, key, redis=console.redis, namespace=namespace):
        return f"{node.id} {key}: cancel requested; the run stops within one renewal interval"
    return f"{node.id} {key}: nothing runs, nothing to cancel"


_ACTIONS: Final[Mapping[str, Callable[[_Console, Form], Awaitable[str]]]] = {
    "pause": _pause,
    "resume": _resume,
    "trigger": _trigger,
    "clear": _clear,
    "cancel": _cancel,
}
