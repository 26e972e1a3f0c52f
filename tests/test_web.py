"""The web console over HTTP (httpx's ASGI transport, no server): pages, JSON, access, CSRF, escaping.

Against the session's real redis-server, after real runs made in this process.
The browser tests (real Chromium) are in ``test_web_browser.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import html
import json
import logging
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import markupsafe
import pytest
import redis
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.routing import Mount

import aiotasks
import aiotasks.web
from aiotasks import _cli
from aiotasks._keys import schedule_keys
from aiotasks.web import _app
from tests.chains import web_chains
from tests.chains.web_chains import HTML_ERROR
from tests.servers import RedisServer, free_port
from tests.support import eventually, until
from tests.test_cli import ROOT, child_env

D1, D2 = "20261201", "20261202"
TOKEN = "t0ken-Secret-4711"
TARGET = "tests/chains/web_chains.py:schedules"
ESCAPED = str(markupsafe.escape(HTML_ERROR))  # what Jinja2's autoescape writes for it


@contextlib.asynccontextmanager
async def browse(app: Any, base: str = "http://console.test") -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to ``app`` in this process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=base) as client:
        yield client


async def login(client: httpx.AsyncClient, token: str = TOKEN, prefix: str = "") -> str:
    """Log in through the login form; returns the browser's CSRF token."""
    page = await client.get(f"{prefix}/login")
    csrf = client.cookies[_app.CSRF_COOKIE]
    assert f'value="{csrf}"' in page.text
    answer = await client.post(f"{prefix}/login", data={"token": token, "csrf": csrf})
    assert answer.status_code == 303, answer.text
    return csrf


async def seed(client: Redis) -> asyncio.Task[Any]:
    """D1: nightly succeeded, report failed (HTML in its error); D2: crunch runs (returned, to cancel)."""
    await aiotasks.run_chain(web_chains.nightly, D1, redis=client)
    await aiotasks.run_chain(web_chains.broken, D1, redis=client)
    running = asyncio.create_task(aiotasks.run_chain(web_chains.slow, D2, redis=client))
    await eventually(lambda: started_once(client), "crunch's body started")
    return running


async def started_once(client: Redis) -> bool:
    return bool(await client.llen("started"))


async def ran_chain(client: Redis, key: str) -> bool:
    return bool(await client.exists(f"success:transform:{key}"))


async def stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def cell(page: str, task: str, key: str) -> str:
    """The state a grid page shows in (task, key)'s cell."""
    found = re.search(rf'data-task="{task}" data-key="{key}" data-state="([a-z]+)"', page)
    assert found, f"no cell {task} {key}"
    return found.group(1)


async def test_every_page_and_its_json_show_each_state(redis_client: Redis) -> None:
    """Overview, grid, history and a cell's runs, as pages and JSON: completed, failed, running,
    pending in the right cells; the running run with host:pid, TTL and fence; the failure under
    "needs attention"; a sub-daily schedule's grid keyed by slots."""
    running = await seed(redis_client)
    try:
        async with browse(aiotasks.web.console(web_chains.schedules, redis=redis_client)) as client:
            grid = (await client.get(f"/api/grid?from={D1}&to={D2}")).json()
            sections = {section["schedule"]: section for section in grid["sections"]}
            assert sections["nightly"]["dates"] == [D1, D2]
            assert sections["nightly"]["tasks"]["extract"][D1]["state"] == "completed"
            assert sections["nightly"]["tasks"]["transform"][D2]["state"] == "pending"
            assert sections["broken"]["tasks"]["report"][D1]["error"].endswith(HTML_ERROR)
            assert sections["slow"]["tasks"]["crunch"][D2]["state"] == "running"
            assert all("T" in key for key in sections["tick"]["dates"])  # slot keys
            assert len(sections["tick"]["dates"]) <= _app.GRID_SLOTS
            page = (await client.get("/grid", params={"from": "2026-12-01", "to": "2026-12-02"})).text
            assert cell(page, "extract", D1) == "completed"
            assert cell(page, "report", D1) == "failed"
            assert cell(page, "crunch", D2) == "running"
            assert cell(page, "transform", D2) == "pending"

            overview = (await client.get("/api/overview")).json()
            (now_running,) = overview["running"]
            assert (now_running["task"], now_running["date"]) == ("crunch", D2)
            assert now_running["ttl_s"] > 0
            assert now_running["fence"] > 0
            assert now_running["pid"] > 0
            assert [(r["task"], r["status"]) for r in overview["attention"]] == [("report", "failed")]
            by_name = {s["name"]: s for s in overview["schedules"]}
            assert by_name["nightly"]["rule"] == "cron 0 0 1 1 * UTC"
            assert by_name["nightly"]["paused"] is None
            assert by_name["nightly"]["next_fire"]
            text = (await client.get("/")).text
            assert "crunch" in text
            assert "Running now" in text
            assert "Needs attention" in text

            failed = (await client.get("/api/history", params={"outcome": "failed"})).json()
            assert [(r["task"], r["date"]) for r in failed["runs"]] == [("report", D1)]
            runs = (await client.get("/api/runs", params={"task": "report", "key": D1})).json()
            assert runs["cell"]["state"] == "failed"
            assert runs["runs"][0]["errors"][0].endswith(HTML_ERROR)
            assert runs["runs"][0]["attempts"] == 1
            counted = (await client.get("/api/runs", params={"task": "extract", "key": D1})).json()
            assert counted["runs"][0]["counters"] == {"rows": 42}
            assert "rows" in (await client.get("/runs", params={"task": "extract", "key": D1})).text
    finally:
        await stop(running)


def test_the_json_documents_are_the_clis(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """/api/grid's section of a chain is ``status --from --to --json``'s document, /api/history's
    runs are ``history --json``'s: the same readers, the same documents."""

    async def seeded() -> None:
        client = Redis.from_url(redis_url)
        try:
            await aiotasks.run_chain(web_chains.nightly, D1, redis=client)
            await aiotasks.run_chain(web_chains.broken, D1, redis=client)
        finally:
            await client.aclose()

    asyncio.run(seeded())
    chain = "tests/chains/web_chains.py:nightly"
    assert _cli.main(["status", chain, "--from", D1, "--to", D2, "--json", "--redis-url", redis_url]) == 0
    status = json.loads(capsys.readouterr().out)
    assert _cli.main(["history", chain, "--json", "--redis-url", redis_url]) == 0
    history = json.loads(capsys.readouterr().out)

    async def served() -> tuple[dict[str, Any], dict[str, Any]]:
        client = Redis.from_url(redis_url)
        try:
            async with browse(aiotasks.web.console(web_chains.nightly, redis=client)) as http:
                grid = (await http.get(f"/api/grid?from={D1}&to={D2}")).json()
                return grid, (await http.get("/api/history")).json()
        finally:
            await client.aclose()

    grid, runs = asyncio.run(served())
    (section,) = grid["sections"]
    assert section["dates"] == status["dates"]
    assert section["tasks"] == status["tasks"]
    assert runs["runs"] == history["runs"]


async def test_an_error_holding_html_is_shown_as_text_on_every_page(redis_client: Redis) -> None:
    """A run's error holding ``<script>`` is escaped wherever it is shown (runs, history, overview,
    the grid's tooltip): never markup."""
    await aiotasks.run_chain(web_chains.broken, D1, redis=redis_client)
    async with browse(aiotasks.web.console(web_chains.schedules, redis=redis_client)) as client:
        pages = {
            path: (await client.get(path)).text
            for path in ("/", f"/grid?from={D1}&to={D1}", "/history", f"/runs?task=report&key={D1}")
        }
    for path, text in pages.items():
        assert "<script>alert" not in text, path
        assert "<b>bold" not in text, path
    assert ESCAPED in pages[f"/runs?task=report&key={D1}"]
    assert html.escape("<script>alert(") in pages["/history"]
    assert html.escape("<script>alert(") in pages[f"/grid?from={D1}&to={D1}"]  # the cell's tooltip


async def test_read_only_offers_no_control_and_refuses_every_post(redis_client: Redis) -> None:
    """Without a token: no control on any page, no login form, and every control POST gets 403
    (with or without a CSRF token, as a form or as JSON): nothing is written."""
    running = await seed(redis_client)
    try:
        async with browse(aiotasks.web.console(web_chains.schedules, redis=redis_client)) as client:
            for path in ("/", f"/runs?task=crunch&key={D2}", f"/runs?task=report&key={D1}"):
                text = (await client.get(path)).text
                assert "/control/" not in text, path
                assert "read-only" in text, path
            assert 'name="token"' not in (await client.get("/login")).text
            csrf = client.cookies[_app.CSRF_COOKIE]
            forms = [
                ("pause", {"kind": "schedule", "name": "nightly"}),
                ("pause", {"kind": "task", "name": "extract"}),
                ("trigger", {"schedule": "nightly"}),
                ("clear", {"task": "extract", "key": D1}),
                ("cancel", {"task": "crunch", "key": D2}),
            ]
            for action, form in forms:
                for extra in ({}, {"csrf": csrf, "confirmed": "1"}):
                    answer = await client.post(f"/control/{action}", data={**form, **extra})
                    assert answer.status_code == 403, (action, extra)
                answer = await client.post(
                    f"/control/{action}", data=form, headers={"accept": "application/json"}
                )
                assert answer.status_code == 403
                assert answer.json()["ok"] is False
            assert await aiotasks.paused_tasks(["extract"], redis=redis_client) == {}
            assert await redis_client.exists(schedule_keys("nightly", namespace=None).paused) == 0
            assert await redis_client.exists(f"success:extract:{D1}") == 1
            assert await redis_client.llen("started") == 1  # crunch still runs
    finally:
        await stop(running)


async def test_a_token_unlocks_the_controls_through_a_cookie_that_is_not_the_token(
    redis_client: Redis,
) -> None:
    """A wrong token is refused (403, no cookie); the right one sets an HttpOnly, SameSite=Strict
    cookie holding no part of the token; then the controls are shown and act."""
    app = aiotasks.web.console(web_chains.schedules, redis=redis_client, token=TOKEN)
    async with browse(app) as client:
        assert "/control/" not in (await client.get("/")).text
        await client.get("/login")
        csrf = client.cookies[_app.CSRF_COOKIE]
        wrong = await client.post("/login", data={"token": "nope", "csrf": csrf})
        assert wrong.status_code == 403
        assert _app.SESSION_COOKIE not in client.cookies
        right = await client.post("/login", data={"token": TOKEN, "csrf": csrf})
        assert right.status_code == 303
        cookie = right.headers["set-cookie"]
        assert "httponly" in cookie.lower()
        assert "samesite=strict" in cookie.lower()
        assert TOKEN not in cookie
        assert TOKEN[:6] not in cookie
        assert 'action="/control/pause"' in (await client.get("/")).text
        json_headers = {"accept": "application/json", "x-csrf-token": csrf}
        answer = await client.post(
            "/control/pause", data={"kind": "schedule", "name": "nightly"}, headers=json_headers
        )
        assert answer.json() == {"ok": True, "message": "schedule nightly paused"}
        assert await redis_client.exists(schedule_keys("nightly", namespace=None).paused) == 1
        overview = (await client.get("/api/overview")).json()
        assert next(s for s in overview["schedules"] if s["name"] == "nightly")["paused"]
        again = await client.post(
            "/control/pause", data={"kind": "schedule", "name": "nightly"}, headers=json_headers
        )
        assert again.json()["message"] == "schedule nightly was already paused"
        await client.post(
            "/control/resume", data={"kind": "schedule", "name": "nightly"}, headers=json_headers
        )
        assert await redis_client.exists(schedule_keys("nightly", namespace=None).paused) == 0
        await client.post("/logout", data={"csrf": csrf})
        assert "/control/" not in (await client.get("/")).text


async def test_state_changing_requests_need_the_csrf_token_and_the_same_origin(redis_client: Redis) -> None:
    """Logged in, a control POST without the CSRF token, with a wrong one, or from another
    origin gets 403 and changes nothing; a GET of a control is not allowed (405)."""
    app = aiotasks.web.console(web_chains.schedules, redis=redis_client, token=TOKEN)
    async with browse(app) as client:
        csrf = await login(client)
        form = {"kind": "task", "name": "extract", "confirmed": "1"}
        assert (await client.post("/control/pause", data=form)).status_code == 403
        assert (await client.post("/control/pause", data={**form, "csrf": "x" + csrf})).status_code == 403
        evil = await client.post(
            "/control/pause", data={**form, "csrf": csrf}, headers={"origin": "http://evil.test"}
        )
        assert evil.status_code == 403
        assert (await client.get("/control/pause")).status_code == 405
        assert await aiotasks.paused_tasks(["extract"], redis=redis_client) == {}
        same = await client.post(
            "/control/pause", data={**form, "csrf": csrf}, headers={"origin": "http://console.test"}
        )
        assert same.status_code == 200
        assert "task extract paused" in same.text
        assert list(await aiotasks.paused_tasks(["extract"], redis=redis_client)) == ["extract"]


async def test_a_script_may_use_the_bearer_token_instead(redis_client: Redis) -> None:
    """``Authorization: Bearer TOKEN`` works without a cookie or CSRF token; a wrong one gets 403."""
    app = aiotasks.web.console(web_chains.schedules, redis=redis_client, token=TOKEN)
    async with browse(app) as client:
        form = {"kind": "task", "name": "transform"}
        bad = await client.post("/control/pause", data=form, headers={"authorization": "Bearer nope"})
        assert bad.status_code == 403
        good = await client.post(
            "/control/pause",
            data=form,
            headers={"authorization": f"Bearer {TOKEN}", "accept": "application/json"},
        )
        assert good.json() == {"ok": True, "message": "task transform paused"}


async def test_a_control_first_asks_for_confirmation_without_javascript(redis_client: Redis) -> None:
    """A form posted without ``confirmed`` (no JavaScript ran its confirm()) gets a confirmation
    page repeating the fields (escaped) and changes nothing; its Yes button confirms."""
    app = aiotasks.web.console(web_chains.schedules, redis=redis_client, token=TOKEN)
    async with browse(app) as client:
        csrf = await login(client)
        page = await client.post("/control/pause", data={"kind": "task", "name": "extract", "csrf": csrf})
        assert page.status_code == 200
        assert "Yes, pause" in page.text
        assert 'name="confirmed" value="1"' in page.text
        assert await aiotasks.paused_tasks(["extract"], redis=redis_client) == {}
        done = await client.post(
            "/control/pause", data={"kind": "task", "name": "extract", "csrf": csrf, "confirmed": "1"}
        )
        assert "task extract paused" in done.text


async def test_each_control_acts_on_the_fleet(redis_client: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pause/resume a task; clear a date with downstream (its cells pending again); run now (a
    Scheduler in this process takes it and the chain runs once; with none serving the request
    expires, said plainly); cancel the running body (recorded cancelled, who asked); cancel
    where nothing runs says so; a name not in the console is refused (400)."""
    monkeypatch.setattr(_app, "TRIGGER_EXPIRES", 0.5)
    running = await seed(redis_client)
    app = aiotasks.web.console(web_chains.schedules, redis=redis_client, token=TOKEN)
    try:
        async with browse(app) as client:
            csrf = await login(client)
            headers = {"accept": "application/json", "x-csrf-token": csrf}

            async def act(action: str, **form: str) -> tuple[int, str]:
                answer = await client.post(f"/control/{action}", data=form, headers=headers)
                return answer.status_code, answer.json()["message"]

            assert await act("pause", kind="task", name="report") == (200, "task report paused")
            assert "task paused" in (await client.get(f"/runs?task=report&key={D1}")).text
            assert await act("resume", kind="task", name="report") == (200, "task report resumed")

            said = await act("clear", task="extract", key=D1, downstream="1")
            assert said == (200, f"{D1}: removed the success markers of extract, transform")
            assert await redis_client.exists(f"success:extract:{D1}", f"success:transform:{D1}") == 0
            grid = (await client.get(f"/api/grid?from={D1}&to={D1}")).json()["sections"][0]
            assert grid["tasks"]["transform"][D1]["state"] == "pending"  # the page shows it to re-run

            code, message = await act("trigger", schedule="nightly", key=D1)
            assert code == 409, message
            assert "no replica" in message.lower(), message

            async with aiotasks.Scheduler(web_chains.schedules[:1], redis=redis_client):
                code, message = await act("trigger", schedule="nightly", key=D1)
                assert code == 200, message
                assert message.startswith(f"schedule nightly {D1}: taken by "), message
                await eventually(lambda: ran_chain(redis_client, D1), "the triggered chain ran")
            listed: list[bytes] = await redis_client.lrange("ran", 0, -1)  # type: ignore[assignment]
            ran = [entry.decode().rsplit(":", 1)[0] for entry in listed]
            assert ran == [f"extract:{D1}", f"transform:{D1}", f"extract:{D1}", f"transform:{D1}"]

            code, message = await act("cancel", task="crunch", key=D2)
            assert code == 200
            assert "cancel requested" in message
            await asyncio.wait_for(asyncio.shield(running), timeout=30)
            runs = (await client.get(f"/api/runs?task=crunch&key={D2}")).json()["runs"]
            assert runs[0]["reason"] == "cancelled"
            assert runs[0]["cancelled_by"]
            assert "cancelled by" in (await client.get(f"/runs?task=crunch&key={D2}")).text
            assert await act("cancel", task="crunch", key=D2) == (
                200,
                f"crunch {D2}: nothing runs, nothing to cancel",
            )
            assert (await act("pause", kind="task", name="nope"))[0] == 400
            assert (await act("trigger", schedule="nope"))[0] == 400
            assert (await act("clear", task="extract", key="2026-13-01"))[0] == 400
    finally:
        await stop(running)


async def test_security_headers_are_on_every_response(redis_client: Redis) -> None:
    """Pages, JSON, static files, a 404 and a refused POST all carry the CSP (no inline script),
    X-Frame-Options, nosniff and Referrer-Policy; the static files are served as what they are."""
    async with browse(aiotasks.web.console(web_chains.schedules, redis=redis_client)) as client:
        answers = [
            await client.get("/"),
            await client.get("/api/overview"),
            await client.get("/static/console.js"),
            await client.get("/static/console.css"),
            await client.get("/static/../_app.py"),
            await client.get("/nope"),
            await client.post("/control/pause", data={}),
        ]
    for answer in answers:
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "same-origin"
    assert answers[2].headers["content-type"].startswith("text/javascript")
    assert answers[4].status_code == 404
    assert "<script>" not in answers[0].text.replace('<script src="/static/console.js" defer></script>', "")


async def test_no_part_of_the_redis_password_or_the_token_in_any_page_response_or_log(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """With a password on Redis and a token: every page, JSON document, header and log line
    (at DEBUG) of a session that logs in and uses a control, and the pages while Redis is
    unreachable (503), hold no part of either."""
    password = "Pw-9f3Kq-Secret-77"
    with redis.Redis.from_url(redis_server.url) as admin:
        admin.flushall()
        admin.config_set("requirepass", password)
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    try:
        url = f"redis://:{password}@127.0.0.1:{redis_server.port}/0"
        client = aiotasks.Settings(redis_url=url).create_client()
        down = aiotasks.Settings(redis_url=f"redis://:{password}@127.0.0.1:{free_port()}/0").create_client()
        try:
            await aiotasks.run_chain(web_chains.broken, D1, redis=client)
            for used in (client, down):
                app = aiotasks.web.console(web_chains.schedules, redis=used, token=TOKEN)
                async with browse(app) as http:
                    csrf = await login(http)
                    for path in ("/", "/grid", "/history", f"/runs?task=report&key={D1}", "/api/overview"):
                        answer = await http.get(path)
                        texts += [answer.text, str(answer.headers)]
                    answer = await http.post(
                        "/control/pause",
                        data={"kind": "task", "name": "report", "csrf": csrf, "confirmed": "1"},
                    )
                    texts += [answer.text, str(answer.headers)]
                    if used is down:
                        assert answer.status_code == 503
                        assert "Redis trouble" in answer.text
        finally:
            await client.aclose()
            await down.aclose()
    finally:
        with redis.Redis.from_url(f"redis://:{password}@127.0.0.1:{redis_server.port}/0") as admin:
            admin.config_set("requirepass", "")
    texts += [record.getMessage() for record in caplog.records]
    everything = "\n".join(texts)
    assert "task report paused" in everything  # the session did act
    for secret in (password, TOKEN):
        pieces = {secret[i : i + 5] for i in range(len(secret) - 4)}
        assert not [piece for piece in pieces if piece in everything], secret


async def test_bad_query_input_is_refused_with_400(redis_client: Redis) -> None:
    """A bad date, a range over a year or backwards, an unknown task or outcome, a bad page or
    key: 400 with one line, as a page and as JSON; the value shown escaped."""
    async with browse(aiotasks.web.console(web_chains.schedules, redis=redis_client)) as client:
        for query in (
            "/grid?from=<b>x</b>",
            "/grid?from=20250101&to=20261231",
            "/grid?from=20261202&to=20261201",
            "/history?task=nope",
            "/history?outcome=<i>",
            "/history?page=-1",
            "/history?page=x",
            "/runs?task=extract&key=2026",
            "/runs?task=<script>&key=20261201",
        ):
            page = await client.get(query)
            assert page.status_code == 400, query
            assert "<b>x" not in page.text
            assert "<script>&" not in page.text
            assert "<i>" not in page.text
            api = await client.get("/api" + query)
            assert api.status_code == 400, query
            assert api.json()["error"], query


async def test_mounted_under_a_prefix_every_link_stays_under_it(redis_client: Redis) -> None:
    """Mounted at /tasks in a Starlette app: links, forms, static files and cookies are under
    /tasks; the pages and JSON work there; a refresh returns only the live part."""
    app = aiotasks.web.console(web_chains.schedules, redis=redis_client, token=TOKEN)
    service = Starlette(routes=[Mount("/tasks", app)])
    async with browse(service) as client:
        page = await client.get("/tasks/")
        assert page.status_code == 200
        links = re.findall(r'(?:href|action|src)="([^"]*)"', page.text)
        assert links
        assert all(link.startswith("/tasks/") for link in links), links
        assert (await client.get("/tasks/static/console.css")).status_code == 200
        assert (await client.get("/tasks/grid")).status_code == 200
        assert (await client.get("/tasks/api/history")).json()["runs"] == []
        assert "path=/tasks" in page.headers["set-cookie"].lower()
        live = await client.get("/tasks/grid", headers={"x-aiotasks-fragment": "1"})
        assert "<html" not in live.text
        assert "grid-section" in live.text
        await login(client, prefix="/tasks")
        assert 'action="/tasks/control/pause"' in (await client.get("/tasks/")).text
        live = await client.get("/tasks/", headers={"x-aiotasks-fragment": "1"})
        assert "<html" not in live.text
        assert 'action="/tasks/control/pause"' in live.text


async def test_history_is_newest_first_paged_and_filtered(redis_client: Redis) -> None:
    """120 runs: pages of 50 newest first (a next page while there are more), filtered by task and
    by outcome."""
    start = dt.date(2026, 9, 1)
    for day in range(60):
        await aiotasks.run_chain(web_chains.nightly, start + dt.timedelta(days=day), redis=redis_client)
    async with browse(aiotasks.web.console(web_chains.schedules, redis=redis_client)) as client:
        first = (await client.get("/api/history")).json()
        assert len(first["runs"]) == 50
        assert first["more"] is True
        started = [run["started"] for run in first["runs"]]
        assert started == sorted(started, reverse=True)
        last = (await client.get("/api/history?page=2")).json()
        assert len(last["runs"]) == 20
        assert last["more"] is False
        assert last["runs"][-1]["date"] == "20260901"
        only = (await client.get("/api/history?task=transform&page=1")).json()
        assert {run["task"] for run in only["runs"]} == {"transform"}
        assert len(only["runs"]) == 10
        assert (await client.get("/api/history?outcome=failed")).json()["runs"] == []
        page = (await client.get("/history?task=transform")).text
        assert "older &rarr;" in page
        assert 'value="transform" selected' in page


def test_the_web_command_says_how_to_install_its_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the [web] extra (uvicorn missing): one line naming the extra, exit 2."""
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    monkeypatch.delitem(sys.modules, "aiotasks.web._serve", raising=False)
    assert _cli.main(["web", TARGET]) == 2
    assert capsys.readouterr().err == f"aiotasks: error: {_cli.WEB_EXTRA}\n"


def test_the_web_command_refuses_bad_options_in_one_line(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty or missing --token-file, a port already in use, a target that is no chain:
    one line each, exit 2 (and no token or URL echoed)."""
    empty = tmp_path / "token"
    empty.write_text("\n")
    cases = [
        ["--token-file", str(empty)],
        ["--token-file", str(tmp_path / "missing")],
    ]
    for extra in cases:
        assert _cli.main(["web", TARGET, "--redis-url", redis_url, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("aiotasks: error: --token-file") or "cannot read --token-file" in err, err
    with contextlib.closing(__import__("socket").socket()) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert _cli.main(["web", TARGET, "--redis-url", redis_url, "--port", str(port)]) == 2
    assert f"cannot serve the web console on 127.0.0.1:{port}" in capsys.readouterr().err
    assert _cli.main(["web", "tests/chains/web_chains.py:HTML_ERROR", "--redis-url", redis_url]) == 2


def test_the_web_command_serves_until_sigterm(redis_url: str, tmp_path: Path) -> None:
    """``aiotasks web TARGET --port 0``: says where it listens (127.0.0.1 by default) and that
    controls need the token, serves the pages, and exits 143 on SIGTERM; no token in its output."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "aiotasks", "web", TARGET, "--port", "0", "--token-file", str(token_file)],
        cwd=ROOT,
        env=child_env(AIOTASKS_REDIS_URL=redis_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        found = re.fullmatch(
            r"aiotasks: web console on http://127\.0\.0\.1:(\d+)/ \(controls unlock with the token\)\n", line
        )
        assert found, line
        with httpx.Client(base_url=f"http://127.0.0.1:{found.group(1)}") as http:
            until(lambda: http.get("/").status_code == 200, "the console answers", process)
            assert "nightly" in http.get("/").text
            assert http.get("/api/overview").json()["running"] == []
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 143, (out, err)
    assert TOKEN not in out + err
    assert "Traceback" not in err


def test_the_console_mounted_in_the_example_service_under_uvicorn(redis_url: str) -> None:
    """examples/service.py under uvicorn mounts the console at /tasks: the overview lists its
    schedules, the grid shows the heartbeat's slots as they run, history and JSON answer, the
    static files load, every link stays under /tasks; read-only without a token."""
    port = free_port()
    service = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.service:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=child_env(AIOTASKS_REDIS_URL=redis_url, HEARTBEAT_EVERY="1s"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:

            def answers() -> bool:
                try:
                    return bool(http.get("/tasks/api/history?task=heartbeat").json()["runs"])
                except httpx.TransportError:
                    return False

            until(answers, "the console shows a heartbeat run", service)
            overview = http.get("/tasks/")
            assert overview.status_code == 200
            assert "heartbeat" in overview.text
            assert "extract,report" in overview.text
            assert "read-only" in overview.text
            links = re.findall(r'(?:href|action|src)="([^"]*)"', overview.text)
            assert all(link.startswith("/tasks/") for link in links), links
            grid = http.get("/tasks/api/grid").json()
            beats = next(s for s in grid["sections"] if s["schedule"] == "heartbeat")
            assert "completed" in {cell["state"] for cell in beats["tasks"]["heartbeat"].values()}
            assert 'data-state="completed"' in http.get("/tasks/grid").text
            assert http.get("/tasks/history").status_code == 200
            assert http.get("/tasks/static/console.js").status_code == 200
            assert http.get("/health").json()["state"] == "running"  # the service's own route
    finally:
        service.send_signal(signal.SIGTERM)
        out, err = service.communicate(timeout=30)
    assert "Traceback" not in out + err, err


def test_nothing_of_the_web_extra_is_imported_without_asking() -> None:
    """``import aiotasks`` and the CLI's other commands import no Starlette, Jinja2, uvicorn or
    ``aiotasks.web``: without the [web] extra installed nothing changes."""
    probe = (
        "import sys, aiotasks, aiotasks._cli\n"
        "aiotasks._cli.main(['plan', 'tests/chains/web_chains.py:nightly'])\n"
        "found = sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in "
        "('starlette', 'jinja2', 'uvicorn')} | {m for m in sys.modules if m.startswith('aiotasks.web')})\n"
        "print('imported:', found)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=child_env(), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "imported: []"


def test_the_web_package_exports_console_only() -> None:
    """``aiotasks.web``'s public surface is ``console``; ``aiotasks`` itself does not re-export it."""
    assert aiotasks.web.__all__ == ["console"]
    assert "web" not in aiotasks.__all__
