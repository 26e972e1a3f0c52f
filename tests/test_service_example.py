"""examples/service.py under uvicorn, in a real process on a real redis-server: health, a run, shutdown."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest
import redis

from tests.servers import free_port
from tests.support import until
from tests.test_cli import ROOT, child_env


def health(port: int) -> tuple[int, dict[str, Any]] | None:
    """GET /health on loopback: (status, JSON body), or None while nothing answers yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)
    except OSError:
        return None


@pytest.mark.timeout(90)
def test_service_answers_health_runs_its_schedule_and_stops_cleanly(redis_url: str) -> None:
    """Under uvicorn the lifespan runs a Scheduler: /health shows it, a 1 s slot runs, SIGTERM ends it."""
    port = free_port()
    service = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.service:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=child_env(AIOTASKS_REDIS_URL=redis_url, HEARTBEAT_EVERY="1s"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    answers: list[tuple[int, dict[str, Any]]] = []
    try:
        with redis.Redis.from_url(redis_url, decode_responses=True) as client:

            def answered() -> bool:
                got = health(port)
                answers.extend([got] if got else [])
                return got is not None

            until(answered, "/health answers", service)
            code, body = answers[-1]
            assert (code, body["state"], body["store"]) == (200, "running", redis_url)
            by_name = {entry["name"]: entry for entry in body["schedules"]}
            assert set(by_name) == {"heartbeat", "extract,report"}
            assert all(entry["next_fire"] for entry in by_name.values())
            assert by_name["heartbeat"]["next_key"].count("T") == 1  # a slot key, YYYYMMDDTHHMMSS

            until(lambda: client.llen("example:heartbeats") > 0, "a heartbeat slot ran", service)
            until(lambda: bool(client.keys("example:report:*")), "the nightly chain caught up", service)
            until(
                lambda: (got := health(port)) is not None and got[1]["schedules"][0]["runs"] > 0,
                "/health counts the run",
                service,
            )
    finally:
        if service.poll() is None:
            service.send_signal(signal.SIGTERM)
        out, err = service.communicate(timeout=30)
    # uvicorn shuts down (the lifespan stops the scheduler), then re-raises the SIGTERM it caught.
    assert service.returncode == -signal.SIGTERM, (out, err)
    assert "Application shutdown complete" in err, err
    assert "Traceback" not in out + err
    with redis.Redis.from_url(redis_url) as client:
        assert client.keys("lock:*") == []  # no run was left holding a lock
