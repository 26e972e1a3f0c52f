"""The web console in a real Chromium (Debian's ``chromium``, driven by Playwright), against real
processes: ``aiotasks run`` for a success and a failure, a SIGKILLed worker, a running body, two
``serve`` replicas, and ``aiotasks web`` itself.

Skipped, saying why, only where no Chromium is installed (``.ci/run`` installs Debian's) or
Playwright's Python package is missing. No browser is ever downloaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import redis

from tests.chains.web_chains import HTML_ERROR
from tests.support import until
from tests.test_cli import ROOT, child_env, cli

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Dialog, Page

D1, D2 = "20261201", "20261202"
TOKEN = "br0wser-Token-2231"
CHAINS = "tests/chains/web_chains.py"
#: The daily schedules' key "run now" runs (their cron fires on 1 January only).
NOW_KEY = "20260101"


def chromium_path() -> str | None:
    """Debian's chromium (or another Chromium on PATH, or $AIOTASKS_CHROMIUM)."""
    explicit = os.environ.get("AIOTASKS_CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module (Playwright drives the installed binary; nothing is downloaded)."""
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium installed (apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed ([test] extra)")
    with sync_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies); any JavaScript dialog is recorded on ``page.dialogs``."""
    context = browser.new_context()
    opened = context.new_page()
    opened.set_default_timeout(30_000)
    try:
        yield opened
    finally:
        context.close()


@contextlib.contextmanager
def console(redis_url: str, **env: str) -> Iterator[str]:
    """``aiotasks web`` on a free port, refreshing every second; yields its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "aiotasks", "web", f"{CHAINS}:schedules", "--port", "0", "--refresh", "1"],
        cwd=ROOT,
        env=child_env(AIOTASKS_REDIS_URL=redis_url, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        found = re.match(r"aiotasks: web console on (http://127\.0\.0\.1:\d+)/", line)
        assert found, line + (process.stderr.read() if process.poll() is not None else "")
        yield found.group(1)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert "Traceback" not in out + err, err


@contextlib.contextmanager
def started(*args: str, redis_url: str) -> Iterator[subprocess.Popen[str]]:
    """A CLI child (``serve``, ``run``) stopped with SIGTERM at the end."""
    process = subprocess.Popen(
        [sys.executable, "-m", "aiotasks", *args],
        cwd=ROOT,
        env=child_env(AIOTASKS_REDIS_URL=redis_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)


def abandon(redis_url: str, task: str, date: str) -> None:
    """A worker takes ``task``'s lock for ``date`` and is SIGKILLed mid-body: its run is abandoned."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.workers.holder", redis_url, task, date, "hang"],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    with worker:
        assert worker.stdout is not None
        json.loads(worker.stdout.readline())  # it holds the lock, in its body
        worker.kill()
    with redis.Redis.from_url(redis_url) as client:
        until(lambda: not client.exists(f"lock:{task}:{date}"), "the killed worker's lock expired")


def state(page: Page, task: str, key: str) -> str | None:
    return page.locator(f'td[data-task="{task}"][data-key="{key}"]').get_attribute("data-state")


def test_the_grid_runs_and_history_in_chromium_after_real_runs(redis_url: str, page: Page) -> None:
    """After a success, a failure whose error holds HTML, a SIGKILLed worker and a running body:
    the grid shows each state in its cell and follows a change without a reload; a click opens
    the failed run's record with its error as text (no script runs); the history filters work;
    without a token no control is offered and a forged POST gets 403."""
    assert (
        cli("run", f"{CHAINS}:nightly", "--date", D1, env=child_env(AIOTASKS_REDIS_URL=redis_url)).returncode
        == 0
    )
    assert (
        cli("run", f"{CHAINS}:broken", "--date", D1, env=child_env(AIOTASKS_REDIS_URL=redis_url)).returncode
        == 1
    )
    abandon(redis_url, "crunch", D1)
    dialogs: list[str] = []

    def dismissed(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismissed)
    with (
        redis.Redis.from_url(redis_url) as client,
        started("run", f"{CHAINS}:slow", "--date", D2, redis_url=redis_url) as slow,
        console(redis_url) as base,
    ):
        until(lambda: client.llen("started") == 1, "crunch's body runs", slow)
        page.goto(f"{base}/grid?from=2026-12-01&to=2026-12-02")
        assert state(page, "extract", D1) == "completed"
        assert state(page, "transform", D1) == "completed"
        assert state(page, "report", D1) == "failed"
        assert state(page, "crunch", D1) == "abandoned"
        assert state(page, "crunch", D2) == "running"
        assert state(page, "transform", D2) == "pending"
        assert page.locator("p.legend").inner_text().count("completed") == 1

        # The page follows the fleet without a reload: the running body is stopped (SIGTERM).
        slow.send_signal(signal.SIGTERM)
        slow.wait(timeout=30)
        until(lambda: state(page, "crunch", D2) == "failed", "the grid refreshed by itself")

        page.locator(f'td[data-task="report"][data-key="{D1}"] a').click()
        page.wait_for_url(re.compile(r"/runs\?task=report&key=20261201$"))
        assert HTML_ERROR in page.locator("pre.error").inner_text()
        assert page.locator("pre.error b").count() == 0
        assert page.locator("#live script").count() == 0
        assert page.locator("#cell-state").inner_text() == "failed"

        page.goto(f"{base}/history")
        page.select_option("select[name=outcome]", "failed")
        page.locator("#filters button").click()
        page.wait_for_url(re.compile(r"outcome=failed"))
        outcomes = page.locator("#history tbody tr").evaluate_all("rows => rows.map(r => r.dataset.outcome)")
        tasks = page.locator("#history tbody tr").evaluate_all("rows => rows.map(r => r.dataset.task)")
        assert outcomes
        assert set(outcomes) == {"failed"}
        assert "report" in tasks
        page.select_option("select[name=outcome]", "")
        page.select_option("select[name=task]", "extract")
        page.locator("#filters button").click()
        page.wait_for_url(re.compile(r"task=extract"))
        tasks = page.locator("#history tbody tr").evaluate_all("rows => rows.map(r => r.dataset.task)")
        assert tasks == ["extract"]

        page.goto(base + "/")
        assert page.locator("form.control").count() == 0
        assert "read-only" in page.locator("header").inner_text()
        forged = page.request.post(f"{base}/control/pause", form={"kind": "schedule", "name": "nightly"})
        assert forged.status == 403
        assert not client.keys("schedule:*:paused")
    assert dialogs == []  # the error text's <script> never ran


def login(page: Page, base: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=token]", TOKEN)
    page.locator("form.login button").click()
    page.wait_for_url(base + "/")
    assert "controls on" in page.locator("header").inner_text()


def click_control(page: Page, row: str, label: str) -> str:
    """Click ``label`` in ``row`` (a CSS selector), accept its confirmation; the flash's message."""
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(row).get_by_role("button", name=label).click()
    flash = page.locator("#flash")
    until(lambda: flash.inner_text() not in ("", "sending..."), f"{label} answered")
    return flash.inner_text()


def keys_of(client: Any, name: str) -> list[str]:
    return sorted(entry.decode().split(":")[0] for entry in client.lrange(name, 0, -1))


def test_the_controls_in_chromium_act_on_two_serve_replicas(redis_url: str, page: Page) -> None:
    """With a token, logged in: Pause stops a 1-second schedule on two real ``serve`` replicas (its
    slots recorded paused, none run), Resume restarts it; Run now runs the daily chain once; Cancel
    stops a running body on a replica and the page shows it cancelled."""
    serve = ("serve", f"{CHAINS}:schedules", "--grace", "1")
    with (
        redis.Redis.from_url(redis_url) as client,
        started(*serve, redis_url=redis_url) as first,
        started(*serve, redis_url=redis_url) as second,
        console(redis_url, AIOTASKS_WEB_TOKEN=TOKEN) as base,
    ):
        until(lambda: client.llen("beats") >= 2, "the replicas fire tick", first, second)
        login(page, base)

        assert click_control(page, 'tr[data-schedule="tick"]', "Pause") == "schedule tick paused"
        paused_row = page.locator('tr[data-schedule="tick"] td.paused-cell')
        until(lambda: "paused" in paused_row.inner_text(), "the overview shows tick paused")

        def paused_slots() -> list[str]:
            answer = page.request.get(f"{base}/api/history?task=beat&outcome=paused").json()
            return sorted(run["date"] for run in answer["runs"])

        until(lambda: len(paused_slots()) >= 3, "three slots recorded paused", first, second)
        slots = paused_slots()
        assert len(set(slots)) == len(slots)  # each recorded once across the two replicas
        assert max(keys_of(client, "beats")) < slots[1]  # none ran after the pause took hold

        assert click_control(page, 'tr[data-schedule="tick"]', "Resume") == "schedule tick resumed"
        until(lambda: max(keys_of(client, "beats")) > paused_slots()[-1], "tick fires again", first, second)

        said = click_control(page, 'tr[data-schedule="nightly"]', "Run now")
        assert said.startswith(f"schedule nightly {NOW_KEY}: taken by "), said
        until(lambda: client.exists(f"success:transform:{NOW_KEY}"), "the chain ran", first, second)
        ran = [entry.decode().rsplit(":", 1)[0] for entry in client.lrange("ran", 0, -1)]
        assert ran == [f"extract:{NOW_KEY}", f"transform:{NOW_KEY}"]

        click_control(page, 'tr[data-schedule="slow"]', "Run now")
        until(lambda: client.llen("started") == 1, "crunch runs on a replica", first, second)
        running_row = f'#running tr[data-task="crunch"][data-key="{NOW_KEY}"]'
        page.wait_for_selector(running_row)
        assert "cancel requested" in click_control(page, running_row, "Cancel")
        page.goto(f"{base}/runs?task=crunch&key={NOW_KEY}")
        page.wait_for_selector('article.run[data-outcome="cancelled"]')
        assert "cancelled by" in page.locator("article.run").first.inner_text()
        until(lambda: not client.exists(f"lock:crunch:{NOW_KEY}"), "the lock is free")
