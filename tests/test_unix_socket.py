"""unix:// URLs: a redis-server listening on a unix socket in its own temporary directory."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

import aiotasks
from aiotasks import RedisUnavailable, Run, Settings, task_boilerplate
from tests.servers import RedisServer
from tests.test_cli import ROOT, child_env

DATE = "20261125"


@pytest.fixture(scope="module")
def unix_server() -> Iterator[RedisServer]:
    with RedisServer(unix_socket=True) as server:
        yield server


@aiotasks.task()
async def over_unix(run: Run) -> None:
    run.result["ok"] = True


async def test_unix_url_runs_tasks_on_its_database(unix_server: RedisServer) -> None:
    """``unix:///path.sock?db=3`` (as AIOTASKS_REDIS_URL or --redis-url): tasks run, keys go to db 3."""
    client = Settings.from_url(f"unix://{unix_server.socket_path}?db=3").create_client()
    try:
        result = await over_unix(DATE, redis=client)
    finally:
        await client.aclose()
    assert (result["status"], result["ok"]) == ("success", True)
    with redis.Redis(unix_socket_path=str(unix_server.socket_path), db=3) as admin:
        assert sorted(admin.keys("*")) == [
            f"run:over_unix:{DATE}".encode(),  # the run's record and its index
            b"runs:over_unix",
            f"success:over_unix:{DATE}".encode(),
        ]
    with redis.Redis(unix_socket_path=str(unix_server.socket_path), db=0) as admin:
        assert admin.keys("*") == []


async def test_missing_unix_socket_is_a_clear_error(unix_server: RedisServer) -> None:
    """A unix:// URL whose socket does not exist: RedisUnavailable naming the path."""
    missing = unix_server.directory / "missing.sock"
    client = Settings.from_url(f"unix://{missing}?db=0", retries=0).create_client()
    try:
        with pytest.raises(RedisUnavailable) as caught:
            await task_boilerplate("t", DATE, redis=client)
    finally:
        await client.aclose()
    assert str(missing) in str(caught.value)


def test_cli_runs_a_chain_over_a_unix_socket(unix_server: RedisServer) -> None:
    """``python -m aiotasks run --redis-url unix://...``: exit 0, every task done, markers in that db."""
    url = f"unix://{unix_server.socket_path}?db=4"
    done = subprocess.run(
        [sys.executable, "-m", "aiotasks", "run", "examples/seed_chain.py:chain", "--date", DATE,
         "--redis-url", url, "--json"],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["summary"]["success"] == 3
    with redis.Redis(unix_socket_path=str(unix_server.socket_path), db=4) as admin:
        # task_odds is recurring: it writes no marker (run records aside).
        assert sorted(k for k in admin.keys("*") if k.startswith(b"success:")) == [
            f"success:task_contributions_analysis:{DATE}".encode(),
            f"success:task_rag_indexing:{DATE}".encode(),
        ]
