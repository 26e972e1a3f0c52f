"""A web service that runs its own scheduled chains: a Scheduler in a Starlette lifespan.

Run as many replicas as you like against one Redis; each slot still runs once::

    pip install 'aiotasks-redis[example]'
    AIOTASKS_REDIS_URL=redis://127.0.0.1:6379/0 uvicorn examples.service:app --port 8000
    curl -s 127.0.0.1:8000/health

Without ``AIOTASKS_REDIS_URL`` it uses an in-process store (``aiotasks-redis[local]``)
and says so: fine to try it, but it coordinates nothing across replicas.
``HEARTBEAT_EVERY`` sets the interval of the heartbeat schedule (default ``30s``).

The web console (grid, history, runs, schedules; ``aiotasks.web``) is mounted at
``/tasks``: open http://127.0.0.1:8000/tasks/. It is read-only unless
``AIOTASKS_WEB_TOKEN`` is set; then its controls (pause, run now, re-run, cancel)
unlock after logging in with that token.

``GET /health`` answers 200 with the scheduler's state and each schedule's next
fire time while the scheduler runs, and 503 once it has stopped (a load balancer
or a Kubernetes readiness probe then takes the replica out). On shutdown
(SIGTERM to uvicorn) the lifespan leaves the ``async with``: no new slots,
running chains get ``GRACE`` seconds, then are cancelled and their locks released.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

import aiotasks
import aiotasks.web

logger = logging.getLogger("examples.service")

#: Seconds running chains get to finish when the service stops (keep it under
#: your platform's kill timeout: Kubernetes' terminationGracePeriodSeconds is 30).
GRACE: Final = 10.0


@aiotasks.task(recurring=True, success_ttl=3600)
async def heartbeat(run: aiotasks.Run) -> None:
    """Records the slot it ran for (recurring: once per slot, across every replica)."""
    await run.redis.rpush("example:heartbeats", run.date)
    await run.redis.ltrim("example:heartbeats", -100, -1)


@aiotasks.task()
async def extract(run: aiotasks.Run) -> None:
    """Yesterday's data in (the nightly schedule's date_offset=-1 makes run.date yesterday)."""
    run.result["rows"] = 42


@aiotasks.task(depends_on=["extract"])
async def report(run: aiotasks.Run) -> None:
    """Runs only after extract succeeded for the same date."""
    await run.redis.set(f"example:report:{run.date}", "done", ex=86400)


SCHEDULES: Final = [
    aiotasks.Schedule(heartbeat, every=os.environ.get("HEARTBEAT_EVERY", "30s")),
    # 02:00 in Berlin over the previous day's data; a deploy later that day
    # still runs it (daily schedules catch up their last slot by default).
    aiotasks.Schedule([extract, report], cron="0 2 * * *", tz="Europe/Berlin", date_offset=-1),
]


def redis_client() -> tuple[Redis | RedisCluster, str]:
    """The client for ``AIOTASKS_REDIS_URL`` (password hidden in what is shown), else an in-process store."""
    settings = aiotasks.Settings.from_env()
    if settings.redis_url is not None:
        return settings.create_client(), settings.redacted_url
    import fakeredis  # aiotasks-redis[local]

    logger.warning(
        "AIOTASKS_REDIS_URL is not set: using an in-process store, which coordinates nothing "
        "across replicas (every replica would run every slot)"
    )
    client: Redis = fakeredis.FakeAsyncRedis()
    return client, "in-process"


#: One client for the scheduler and the console (created lazily: no connection at import).
CLIENT, STORE = redis_client()


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    """Start the scheduler with the service and stop it (gracefully) with it."""
    client, store = CLIENT, STORE
    try:
        # Fail the startup, not the first slot, when Redis is unreachable.
        await client.ping()
        async with aiotasks.Scheduler(SCHEDULES, redis=client, grace=GRACE) as scheduler:
            logger.info("scheduler running on %s", store)
            yield {"scheduler": scheduler, "store": store}
    finally:
        await client.aclose()


async def health(request: Request) -> JSONResponse:
    """The scheduler's state and each schedule's next fire time; 503 unless it runs."""
    scheduler: aiotasks.Scheduler = request.state.scheduler
    status = scheduler.status()
    status["store"] = request.state.store
    return JSONResponse(status, status_code=200 if status["state"] == "running" else 503)


app = Starlette(
    routes=[
        Route("/health", health),
        Mount(
            "/tasks",
            aiotasks.web.console(SCHEDULES, redis=CLIENT, token=os.environ.get("AIOTASKS_WEB_TOKEN") or None),
        ),
    ],
    lifespan=lifespan,
)
