"""``python -m aiotasks``: run chains from cron, systemd timers and Kubernetes CronJobs.

This is the only module that knows about terminals, signals and exit codes.
Errors are one line on stderr (``aiotasks: error: ...``), never a traceback,
and never contain any part of a Redis password. Exit codes:

* 0 - every task succeeded, or was skipped as already completed (or, for a
  recurring task, because another worker is running it right now), or is
  paused fleet-wide (``pause --task``), as are the tasks not run because a
  task they need is paused: the operator asked for it (the summary counts
  them ``paused``); ``pause``/``resume`` also when nothing changed (it
  already was so: said on stdout);
* 1 - some task failed, or was not run because a dependency did not succeed;
  for ``trigger``, also: no replica took the request before it expired; for
  ``cancel``: nothing runs for that task and date (nothing written), or with
  ``--wait --timeout``, the run still held its lock when the timeout ran out;
* 2 - what the command says is wrong: a bad date or range (or one longer than
  ``--max-dates``), a target that can't be imported or is not a chain, an
  invalid chain, a bad option or Redis URL (unknown option, a database the
  server does not have, a cluster node without ``--cluster``, a missing TLS
  file); a schedule name not in the target, a trigger key not of its schedule;
  ``web`` without its extra (``aiotasks-redis[web]``), or a port it can't listen on;
  a task not in the target (``pause``/``resume --task``, ``clear --task``,
  ``cancel``);
* 3 - what Redis said: unreachable, too slow, not speaking Redis, refusing our
  credentials or a command, keys of the wrong type, or failing mid-run;
* 130 / 143 - interrupted by SIGINT / SIGTERM: running tasks were cancelled and
  their locks released (``--json`` still prints the document: what finished,
  the rest ``cancelled``). A second signal exits at once (a sync body still
  running in a thread then keeps its lock until its ``lock_timeout``).

Targets are imported before the event loop starts, so a module that calls
``asyncio.run()`` at import works. ``run`` and ``serve`` run on uvloop when it
is installed (``pip install 'aiotasks-redis[uvloop]'``: a run costs the worker
less CPU), else on asyncio's own loop; every other command on asyncio's.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar, cast

from redis import exceptions as rex

from . import __version__
from ._backfill import check_window, run_window
from ._cancel import shielded
from ._cancel_run import request_cancel, wait_stopped
from ._chain import Chain, ChainRun, Node, check_run_options, prepare_run
from ._clock import current_clock
from ._config import Settings, in_process_client
from ._controls import (
    clear,
    dependents_of,
    pause_schedule,
    pause_task,
    paused_tasks,
    resume_schedule,
    resume_task,
)
from ._errors import AioTasksError, InvalidChain, InvalidInput, RedisAuthError, RedisUnavailable
from ._keys import TaskKeys, date_range, parse_date, parse_run_key, schedule_keys, task_keys
from ._metrics import exposition, serve_metrics
from ._reading import newest_first, read_status
from ._records import HOST, Cell, TaskSummary, read_runs, retention_ms
from ._schedule import Schedule
from ._scheduler import Scheduler
from ._store import AnyRedis, LockState, store_for
from ._task import Task
from ._trigger import DEFAULT_EXPIRES, Triggered, check_expires, trigger, trigger_key
from ._views import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REDIS,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_USAGE,
    cell_rows,
    control_line,
    controls_json,
    controls_lines,
    exit_code,
    grid_json,
    grid_text,
    history_text,
    interrupted_results,
    live_frame,
    plan_dot,
    plan_mermaid,
    plan_text,
    result_lines,
    status_cells_text,
    summarize,
    summary_line,
    task_lines,
    to_json,
)
from ._wire import describe

__all__ = ["main"]

logger = logging.getLogger("aiotasks.cli")

IN_PROCESS_NOTICE = (
    "aiotasks: no Redis configured (--redis-url or AIOTASKS_REDIS_URL): using an in-process store, "
    "which coordinates nothing across processes"
)
LIVE_INTERVAL = 0.2
#: Most dates ``run --from/--to`` accepts without ``--max-dates`` (about ten years).
MAX_DATES = 3660
#: Every date there is (0001-01-01 to 9999-12-31): the most ``--max-dates`` can mean.
ALL_DATES = 3_652_059
#: The most any other count option takes (``--last``, ``--window``, ``--max-concurrency``).
MAX_COUNT = 100_000
#: Most seconds the CLI waits, before it exits, for the door to send what it holds (given-back locks).
DRAIN_WAIT = 5.0

T = TypeVar("T")


def _echo(text: str, stream: IO[str] | None = None) -> None:
    """Write one line (the CLI's only output path; the library itself never prints)."""
    out = sys.stdout if stream is None else stream
    out.write(text + "\n")
    out.flush()


class CliError(Exception):
    """An error the CLI reports as one line, with its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CliError):
    """Bad usage detected by the CLI itself (exit code 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


class ServerError(CliError):
    """What the Redis server said makes the command impossible (exit code 3)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_REDIS)


class Interrupted(Exception):
    """A signal cancelled the command; ``code`` is 130 or 143 (the message was printed already)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _count(low: int, high: int, unit: str = "") -> Callable[[str], int]:
    """An option's type: a whole number from ``low`` to ``high``, refused while parsing.

    Every int option is bounded, so that no value reaches Redis (``history
    --last 99999999999999999999`` made the RUNS script fail) or a semaphore it
    can't mean; argparse names the option: ``argument --last: must be ...``.
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # also more than 4300 digits
            raise argparse.ArgumentTypeError(f"not a whole number: {text[:40]!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low:,} to {high:,}{unit}, not {text[:40]}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="aiotasks",
        description="Run chains of once-a-day tasks safely from many processes and machines.",
        epilog="Exit codes: 0 ok, 1 a task failed or was blocked, 2 bad usage or input, "
        "3 Redis unavailable or refusing, 130/143 interrupted. See docs/reference/exit-codes.md.",
    )
    parser.add_argument("--version", action="version", version=f"aiotasks {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    count = _count(1, MAX_COUNT)

    def target(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("target", help="the chain: package.module:attr or path/to/file.py:attr")

    def redis_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--redis-url", help="Redis URL (default: $AIOTASKS_REDIS_URL)")
        sub.add_argument(
            "--cluster", action="store_true", default=None, help="the URL is a Redis Cluster node"
        )
        sub.add_argument("--namespace", help="key prefix (default: $AIOTASKS_NAMESPACE)")
        sub.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")

    def dates(sub: argparse.ArgumentParser, what: str) -> None:
        """--date, or --from/--to (a ``what``) bounded by --max-dates; read by :func:`_dates`."""
        day = sub.add_mutually_exclusive_group()
        day.add_argument("--date", help="YYYYMMDD or a slot YYYYMMDDTHHMM[SS] (default: today)")
        day.add_argument("--from", dest="date_from", metavar="YYYYMMDD", help=f"first date of a {what}")
        sub.add_argument(
            "--to", dest="date_to", metavar="YYYYMMDD", help=f"last date of a {what} (with --from)"
        )
        sub.add_argument(
            "--max-dates",
            type=_count(1, ALL_DATES, " (every date there is)"),
            default=MAX_DATES,
            metavar="N",
            help=f"refuse a {what} of more than N dates (default {MAX_DATES}, about 10 years)",
        )

    run = commands.add_parser("run", help="run a chain for a date or a range of dates")
    target(run)
    dates(run, "backfill")
    redis_options(run)
    run.add_argument("--max-concurrency", type=count, help="how many tasks may run at once")
    run.add_argument(
        "--window", type=count, default=1, help="dates of a backfill in flight at once, oldest first (1)"
    )
    run.add_argument(
        "--only", action="append", metavar="TASK", help="run TASK and what it needs (repeatable)"
    )
    run.add_argument("--force", action="store_true", help="ignore success markers for this run")
    run.add_argument("--wait-timeout", type=float, help="longest wait for another worker's run of a task (s)")
    run.add_argument("--json", action="store_true", help="print one JSON document")

    plan = commands.add_parser("plan", help="print the dependency order (touches no Redis)")
    target(plan)
    plan.add_argument("--format", choices=("text", "mermaid", "dot"), default="text")

    status = commands.add_parser(
        "status", help="each task (x each date) as completed, failed, running, abandoned or pending"
    )
    target(status)
    dates(status, "grid")
    redis_options(status)
    status.add_argument("--json", action="store_true", help="print one JSON document")

    history = commands.add_parser("history", help="the recorded runs, newest first, from every host")
    target(history)
    history.add_argument("--task", action="append", metavar="TASK", help="only this task (repeatable)")
    history.add_argument("--last", type=count, default=20, metavar="N", help="how many runs (default 20)")
    redis_options(history)
    history.add_argument("--json", action="store_true", help="print one JSON document")

    metrics = commands.add_parser("metrics", help="Prometheus text exposition computed from the records")
    target(metrics)
    metrics.add_argument(
        "--serve", type=_count(0, 65535), metavar="PORT", help="serve it over HTTP instead of printing"
    )
    metrics.add_argument("--bind", default="127.0.0.1", help="address for --serve (default 127.0.0.1)")
    redis_options(metrics)

    serve = commands.add_parser("serve", help="fire schedules until stopped (run it on every replica)")
    serve.add_argument("target", help="a Schedule or a list of them: package.module:attr or file.py:attr")
    redis_options(serve)
    serve.add_argument("--grace", type=float, default=30.0, help="seconds running chains get on SIGTERM (30)")
    serve.add_argument("--max-concurrency", type=count, help="how many task bodies may run at once")
    serve.add_argument("--window", type=count, default=1, help="slots of a catch-up in flight at once (1)")
    serve.add_argument(
        "--no-triggers",
        dest="triggers",
        action="store_false",
        help="do not serve `trigger` requests (an idle replica then sends nothing to Redis)",
    )

    trigger = commands.add_parser(
        "trigger", help="ask the serving schedulers to run a schedule's chain now (one replica does)"
    )
    trigger.add_argument("target", help="the Schedules `serve` runs: package.module:attr or file.py:attr")
    trigger.add_argument("--schedule", required=True, metavar="NAME", help="the schedule's name")
    trigger.add_argument(
        "--key", metavar="DATE_OR_SLOT", help="YYYYMMDD or YYYYMMDDTHHMM[SS] (default: the slot due now)"
    )
    trigger.add_argument("--force", action="store_true", help="ignore success markers (never a lock)")
    trigger.add_argument("--wait", action="store_true", help="wait for the chain's outcome; exit like run")
    trigger.add_argument("--here", action="store_true", help="run it in this process, as run does")
    trigger.add_argument(
        "--expires",
        type=float,
        default=DEFAULT_EXPIRES,
        metavar="SECONDS",
        help=f"how long the request waits for a replica (default {DEFAULT_EXPIRES:g})",
    )
    redis_options(trigger)
    trigger.add_argument("--json", action="store_true", help="print one JSON document")

    cancel = commands.add_parser(
        "cancel", help="cancel a task's running run, on whichever host runs it (within one renewal)"
    )
    cancel.add_argument("target", help="the chain (as run's) or the Schedules (as serve's) holding the task")
    cancel.add_argument("--task", required=True, metavar="ID", help="the task's id in the target")
    cancel.add_argument("--date", required=True, help="the run's YYYYMMDD or slot YYYYMMDDTHHMM[SS]")
    cancel.add_argument("--wait", action="store_true", help="wait until the run stopped and its lock is free")
    cancel.add_argument("--timeout", type=float, metavar="SECONDS", help="with --wait: the longest wait")
    redis_options(cancel)
    cancel.add_argument("--json", action="store_true", help="print one JSON document")

    web = commands.add_parser(
        "web", help="serve the web console: grid, history, runs, schedules and the controls (needs [web])"
    )
    web.add_argument(
        "target", help="Schedules (or a chain): package.module:attr or path/to/file.py:attr, as serve/run"
    )
    web.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    web.add_argument("--port", type=_count(0, 65535), default=8080, help="port (default 8080; 0: any free)")
    web.add_argument(
        "--token-file",
        metavar="PATH",
        help="file holding the secret that unlocks the controls (default: $AIOTASKS_WEB_TOKEN; "
        "neither: read-only)",
    )
    web.add_argument(
        "--refresh", type=float, default=5.0, metavar="SECONDS", help="how often open pages refresh (5)"
    )
    redis_options(web)

    for verb, what in (("pause", "stop"), ("resume", "lift the pause of")):
        control = commands.add_parser(
            verb, help=f"{what} a schedule (no replica fires it) or a task (nowhere starts it), fleet-wide"
        )
        control.add_argument(
            "target", help="the Schedules (or, with --task, a chain): package.module:attr or file.py:attr"
        )
        which = control.add_mutually_exclusive_group(required=True)
        which.add_argument("--schedule", metavar="NAME", help="the schedule's name")
        which.add_argument("--task", metavar="ID", help="the task's id in the target's chain(s)")
        redis_options(control)

    clear = commands.add_parser(
        "clear",
        aliases=["reset"],
        help="remove success markers so tasks run again (reset: the old name of clear)",
    )
    target(clear)
    clear.add_argument("--date", help="YYYYMMDD or a slot YYYYMMDDTHHMM[SS] (default: today)")
    clear.add_argument("--task", action="append", metavar="TASK", help="only this task (repeatable)")
    clear.add_argument("--downstream", action="store_true", help="and every task that depends on them")
    clear.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    redis_options(clear)
    return parser


def load_chain(target: str) -> Chain:
    """Import ``package.module:attr`` or ``path/to/file.py:attr`` and validate the chain it names.

    :raises UsageError: the target can't be imported or does not name a chain.
    :raises InvalidChain: the chain is invalid.
    """
    return _as_chain(_import_target(target), target)


def _as_chain(found: Any, target: str) -> Chain:
    if isinstance(found, Chain):
        return found
    if isinstance(found, Task):
        return Chain([found])
    if not isinstance(found, list | tuple):
        raise UsageError(f"{target!r} is a {type(found).__name__}, not a chain (a list of tasks)")
    return Chain(found)


def load_schedules(target: str) -> list[Schedule]:
    """Import the :class:`Schedule` (or list of them) that ``target`` names.

    :raises UsageError: the target can't be imported or holds no Schedule.
    """
    found = _import_target(target)
    schedules = _as_schedules(found)
    if schedules is None:
        raise UsageError(f"{target!r} holds no Schedule (a Schedule or a list of them): {found!r}"[:300])
    return schedules


def _as_schedules(found: Any) -> list[Schedule] | None:
    if isinstance(found, Schedule):
        return [found]
    if isinstance(found, list | tuple) and found and all(isinstance(item, Schedule) for item in found):
        return list(found)
    return None


def load_tasks(target: str) -> dict[str, Node]:
    """The tasks of the chain, or of every schedule's chain, that ``target`` names, by id.

    :raises UsageError: the target can't be imported or names neither.
    :raises InvalidChain: a chain is invalid.
    """
    found = _import_target(target)
    schedules = _as_schedules(found)
    chains = [s.chain for s in schedules] if schedules is not None else [_as_chain(found, target)]
    return {node.id: node for chain in chains for node in chain}


def _schedule_named(target: str, schedules: list[Schedule], name: str) -> Schedule:
    """The schedule of ``target`` named ``name``; a UsageError naming both otherwise."""
    named = {schedule.name: schedule for schedule in schedules}
    schedule = named.get(name)
    if schedule is None:
        raise UsageError(
            f"{target!r} has no schedule named {name!r} (it has: " + ", ".join(repr(n) for n in named) + ")"
        )
    return schedule


def _import_target(target: str) -> Any:
    """Import ``package.module:attr`` or ``path/to/file.py:attr`` and return the attribute."""
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"target {target!r} must be package.module:attr or path/to/file.py:attr")
    try:
        if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
            path = Path(module_name).resolve()
            if not path.is_file():
                raise UsageError(f"cannot import {target!r}: no such file {module_name!r}")
            sys.path.insert(0, str(path.parent))
            spec = importlib.util.spec_from_file_location(f"aiotasks_target_{path.stem}", path)
            if spec is None or spec.loader is None:
                raise UsageError(f"cannot import {target!r}: not a Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except UsageError:
        raise
    except AioTasksError:
        raise
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise UsageError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    found: Any = module
    for part in attr.split("."):
        if not hasattr(found, part):
            raise UsageError(f"{module_name!r} has no attribute {attr!r}")
        found = getattr(found, part)
    return found


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    # The library reads AIOTASKS_RETENTION when a run writes its record (so each run would fail
    # on a bad one); the command line refuses it with the other settings, before anything is sent.
    retention_ms()
    changes: dict[str, Any] = {}
    if args.redis_url is not None:
        changes["redis_url"] = args.redis_url
    if args.cluster:
        changes["cluster"] = True
    if args.namespace is not None:  # --namespace= is refused, not ignored
        changes["namespace"] = args.namespace
    return settings.with_options(**changes) if changes else settings


def _client(settings: Settings, *, need_redis: str | None = None) -> AnyRedis:
    if settings.redis_url is None:
        if need_redis:
            raise UsageError(f"{need_redis} needs a Redis: pass --redis-url or set AIOTASKS_REDIS_URL")
        client = in_process_client()  # may say that fakeredis is missing: before announcing it
        _echo(IN_PROCESS_NOTICE, sys.stderr)
        return client
    return settings.create_client()


def _dates(args: argparse.Namespace) -> Sequence[str]:
    """The run's dates (made one at a time), refusing a range longer than ``--max-dates``."""
    if args.date_to and not args.date_from:
        raise UsageError("--to needs --from")
    if args.date_from:
        if not args.date_to:
            raise UsageError("--from needs --to")
        dates = date_range(parse_date(args.date_from), parse_date(args.date_to))
        if len(dates) > args.max_dates:
            raise UsageError(
                f"--from {args.date_from} --to {args.date_to} is {len(dates):,} dates, more than "
                f"--max-dates {args.max_dates:,}: pass --max-dates {len(dates)} to run them all"
            )
        return dates
    return [parse_run_key(args.date)]


def _explain(exc: BaseException, client: AnyRedis, settings: Settings) -> BaseException:
    """What a redis-py error met before any task ran means for the user, with a hint.

    Errors about what the command says (a database the server does not have, a
    cluster node addressed as a plain server) become :class:`UsageError`; what
    the server itself says becomes :class:`ServerError`. Anything else is
    returned unchanged.
    """
    if isinstance(exc, RedisUnavailable) and "cluster mode is not enabled" in str(exc).lower():
        return UsageError(
            f"Redis at {settings.redacted_url} is not a cluster node: "
            "drop --cluster (and AIOTASKS_REDIS_CLUSTER)"
        )
    if isinstance(exc, RedisAuthError) and "'select' command" in str(exc):
        return ServerError(
            f"{exc}: the URL names a database other than 0, which needs +select in the user's ACL rules"
        )
    if not isinstance(exc, rex.ResponseError):
        return exc
    server = describe(client)
    text = str(exc)
    if "DB index is out of range" in text:
        return UsageError(
            f"Redis at {server} has no such database (it has as many as its `databases` setting, "
            "16 by default): name another in the URL"
        )
    # redis-py 6 and later name these replies by class (MovedError is an AskError) and drop
    # their prefix; 5.x leaves some as a plain ResponseError with the prefix.
    if isinstance(
        exc, rex.AskError | rex.TryAgainError | rex.ClusterCrossSlotError | rex.ClusterDownError
    ) or text.startswith(("MOVED ", "ASK ", "CROSSSLOT ", "TRYAGAIN ", "CLUSTERDOWN ")):
        return UsageError(
            f"Redis at {server} is a node of a Redis Cluster: add --cluster (or set AIOTASKS_REDIS_CLUSTER=1)"
        )
    return ServerError(f"Redis at {server} replied with an error: {text}")


async def _check_server(client: AnyRedis, settings: Settings, keys: TaskKeys | None) -> None:
    """Ping, then read one task's keys (as ``status`` would): a server that can't serve
    aiotasks (no such database, a cluster node without ``--cluster``, missing script
    permissions) is reported once, before anything runs, instead of by every task."""
    store = store_for(client)
    try:
        await store.ping()
        if keys is not None:  # None: an empty chain, no keys to read
            await store.status(keys)
    except Exception as exc:
        explained = _explain(exc, client, settings)
        if explained is exc:
            raise
        raise explained from exc


class _Live:
    """Redraws the live view on a terminal while a chain runs."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.drawn = 0

    async def follow(self, run: ChainRun) -> None:
        while True:
            self.draw(run)
            await asyncio.sleep(LIVE_INTERVAL)

    def draw(self, run: ChainRun) -> None:
        rows = shutil.get_terminal_size((100, 24)).lines - 1
        lines = live_frame(run, rows)
        erase = f"\x1b[{self.drawn}F\x1b[J" if self.drawn else ""
        self.stream.write(erase + "\n".join(lines) + "\n")
        self.stream.flush()
        self.drawn = len(lines)

    def clear(self) -> None:
        if self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
            self.stream.flush()
            self.drawn = 0


class _Signals:
    """The signals received while a command runs (the first one cancels it)."""

    def __init__(self) -> None:
        self.received: list[int] = []
        #: What the first signal does instead of cancelling the command: (what to say, what to call).
        self.first: tuple[str, Callable[[], object]] | None = None

    @property
    def exit_code(self) -> int | None:
        """130 or 143 once a signal arrived, else None."""
        if not self.received:
            return None
        return EXIT_SIGINT if self.received[0] == signal.SIGINT else EXIT_SIGTERM


def _run(args: argparse.Namespace, chain: Chain) -> int:
    if args.only:
        chain = chain.select(args.only)
    dates = _dates(args)
    check_run_options(args.max_concurrency, args.wait_timeout)
    check_window(args.window)
    settings = _settings(args)
    return _in_loop(lambda signals: _run_chain(args, chain, dates, settings, signals), fast=True)


async def _run_chain(
    args: argparse.Namespace,
    chain: Chain,
    dates: Sequence[str],
    settings: Settings,
    signals: _Signals,
    *,
    triggered_by: str | None = None,
) -> int:
    client = _client(settings)
    runs: list[dict[str, Any]] = []
    in_flight: dict[str, ChainRun] = {}
    started: dict[str, float] = {}
    try:
        if settings.redis_url is not None:
            first = next(iter(chain), None)
            keys = _keys_of(first, dates[0], settings, client) if first is not None else None
            await _check_server(client, settings, keys)
        live = _Live(sys.stdout) if sys.stdout.isatty() and not args.json and args.window == 1 else None
        # One semaphore for every date in flight: --max-concurrency bounds bodies overall.
        limit = asyncio.Semaphore(args.max_concurrency) if args.max_concurrency else None
        followers: dict[str, asyncio.Task[None]] = {}

        def prepared() -> Iterator[ChainRun]:
            for date in dates:
                run = prepare_run(
                    chain,
                    date,
                    redis=client,
                    max_concurrency=args.max_concurrency,
                    namespace=settings.namespace,
                    force=args.force,
                    wait_timeout=args.wait_timeout,
                    limit=limit,
                    triggered_by=triggered_by,
                )
                started[date] = time.monotonic()
                in_flight[date] = run
                if live is not None:
                    followers[date] = asyncio.create_task(live.follow(run))
                yield run

        def finished(run: ChainRun, results: dict[str, dict[str, Any]]) -> None:
            del in_flight[run.date]
            follower = followers.pop(run.date, None)
            if follower is not None and live is not None:
                follower.cancel()
                live.clear()
            summary = summarize(results, time.monotonic() - started[run.date])
            runs.append({"date": run.date, "tasks": results, "summary": summary})
            if not args.json:
                _echo("\n".join([summary_line(run.date, summary), *task_lines(run)]))

        try:
            await run_window(prepared(), args.window, finished)
        finally:
            for follower in followers.values():
                follower.cancel()
            if followers and live is not None:
                live.clear()
            runs.sort(key=lambda entry: str(entry["date"]))  # a window finishes dates out of order
    except asyncio.CancelledError:
        code = signals.exit_code
        if args.json and code is not None:
            for run in in_flight.values():  # the dates that were running: what finished, the rest cancelled
                results = interrupted_results(run)
                summary = summarize(results, time.monotonic() - started[run.date])
                runs.append({"date": run.date, "tasks": results, "summary": summary})
            runs.sort(key=lambda entry: str(entry["date"]))
            _print_document(runs, settings, code)
        raise
    finally:
        await _close(client)
    code = exit_code([entry["summary"] for entry in runs])
    if args.json:
        _print_document(runs, settings, code)
    return code


def _print_document(runs: list[dict[str, Any]], settings: Settings, code: int) -> None:
    document: dict[str, Any] = dict(runs[0]) if len(runs) == 1 else {"runs": runs}
    document["store"] = store_for_display(settings)
    document["exit_code"] = code
    _echo(to_json(document))


def store_for_display(settings: Settings) -> str:
    """Where the run's locks live, without credentials."""
    if settings.redis_url is None:
        return "in-process (coordinates nothing across processes)"
    return settings.redacted_url


def _keys_of(node: Node, date: str, settings: Settings, client: AnyRedis) -> TaskKeys:
    # By the entry's task name, its id for a seed-style function: one that passes another name to
    # task_boilerplate is learnt only by running it (see _chain._learn), which these commands don't.
    cluster = store_for(client).cluster
    return task_keys(node.task_name, date, namespace=settings.namespace, cluster=cluster)


async def _lock_states(
    settings: Settings, client: AnyRedis, nodes: Sequence[Node], date: str
) -> dict[str, LockState]:
    """Read the marker, holder and TTL of each task (one coalesced batch)."""
    keys = {node.id: _keys_of(node, date, settings, client) for node in nodes}
    await _check_server(client, settings, next(iter(keys.values()), None))
    store = store_for(client)
    states = await asyncio.gather(*(store.status(k) for k in keys.values()), return_exceptions=True)
    for name, state in zip(keys, states, strict=True):
        if isinstance(state, rex.ResponseError) and str(state).startswith("WRONGTYPE"):
            raise ServerError(
                f"task {name!r} for {date}: {keys[name].lock} or {keys[name].success} holds another "
                "kind of value: another application uses these keys (give aiotasks a --namespace)"
            )
        if isinstance(state, BaseException):
            raise state
    return dict(zip(keys, cast("list[LockState]", states), strict=True))


def _status(args: argparse.Namespace, chain: Chain, schedules: list[Schedule]) -> int:
    dates = list(_dates(args))
    settings = _settings(args)
    nodes = list(chain)

    async def read(signals: _Signals) -> tuple[dict[str, dict[str, Cell]], _Controls]:
        client = _client(settings, need_redis="status")
        try:
            first = _keys_of(nodes[0], dates[0], settings, client) if nodes else None
            await _check_server(client, settings, first)
            store = store_for(client)
            try:
                found = await read_status(store, nodes, dates, namespace=settings.namespace)
                return found, await _read_controls(client, settings, nodes, schedules)
            except rex.ResponseError as exc:
                if not str(exc).startswith("WRONGTYPE"):
                    raise
                # Only when it went wrong: find the task whose lock or marker it is (one more batch).
                for date in dates:
                    await _lock_states(settings, client, nodes, date)
                raise ServerError(
                    "a run record key of these tasks holds another kind of value: another application "
                    "uses these keys (give aiotasks a --namespace)"
                ) from None
        finally:
            await _close(client)

    grid, controls = _in_loop(read)
    color = sys.stdout.isatty() and not args.json
    if args.date_from is None:
        date = dates[0]
        day = {name: by_date[date] for name, by_date in grid.items()}
        document: Any = {"date": date, "tasks": cell_rows(day)}
        text = status_cells_text(date, day, color=color)
    else:
        document, text = grid_json(dates, grid), grid_text(dates, grid, color=color)
    if args.json:
        _echo(to_json({**document, **controls_json(*controls)}))
    else:
        _echo("\n".join([text, *controls_lines(*controls)]))
    return EXIT_OK


#: The controls in effect for a view: paused tasks by entry id, and (for a target of schedules)
#: each schedule's (who paused it, pending triggers); None when the target is a chain.
_Controls = tuple[dict[str, str], dict[str, tuple[str | None, int]] | None]


async def _read_controls(
    client: AnyRedis, settings: Settings, nodes: Sequence[Node], schedules: Sequence[Schedule]
) -> _Controls:
    """Which of ``nodes`` are paused, and each schedule's controls (one batch: the door coalesces)."""
    store = store_for(client)
    names = {node.id: node.task_name for node in nodes}
    by_name, found = await asyncio.gather(
        paused_tasks(list(dict.fromkeys(names.values())), redis=client, namespace=settings.namespace),
        asyncio.gather(
            *(
                store.read_schedule(schedule_keys(str(s.name), namespace=settings.namespace))
                for s in schedules
            )
        ),
    )
    paused = {node_id: by_name[name] for node_id, name in names.items() if name in by_name}
    if not schedules:
        return paused, None
    return paused, {str(s.name): controls for s, controls in zip(schedules, found, strict=True)}


def _chosen(chain: Chain, only: list[str] | None) -> list[Node]:
    """The chain's tasks named by ``--task`` (all without it), refusing a name not in the chain."""
    if only:
        unknown = [name for name in only if name not in chain.nodes]
        if unknown:
            raise InvalidChain(f"no task {unknown[0]!r} in the chain", unknown[0])
        return [node for node in chain if node.id in only]
    return list(chain)


async def _read_runs(
    settings: Settings, nodes: list[Node], last: int, command: str, schedules: Sequence[Schedule] = ()
) -> tuple[dict[str, TaskSummary], _Controls]:
    client = _client(settings, need_redis=command)
    try:
        await _check_server(client, settings, None)
        names = list(dict.fromkeys(node.task_name for node in nodes))
        summaries = await read_runs(store_for(client), names, namespace=settings.namespace, last=last)
        return summaries, await _read_controls(client, settings, nodes, schedules)
    finally:
        await client.aclose()


def _history(args: argparse.Namespace, chain: Chain, schedules: list[Schedule]) -> int:
    nodes = _chosen(chain, args.task)
    settings = _settings(args)
    summaries, controls = _in_loop(
        lambda signals: _read_runs(settings, nodes, args.last, "history", schedules)
    )
    runs = newest_first(run for summary in summaries.values() for run in summary.runs)[: args.last]
    if args.json:
        _echo(to_json({"runs": [run.to_json() for run in runs], **controls_json(*controls)}))
    else:
        _echo("\n".join([history_text(runs), *controls_lines(*controls)]))
    return EXIT_OK


#: How many recent runs per task ``metrics`` reads to count those running.
METRICS_RECENT = 50


def _metrics(args: argparse.Namespace, chain: Chain) -> int:
    nodes = list(chain)
    settings = _settings(args)
    names = list(dict.fromkeys(node.task_name for node in nodes))
    if args.serve is None:
        summaries, (paused, _) = _in_loop(
            lambda signals: _read_runs(settings, nodes, METRICS_RECENT, "metrics")
        )
        by_name = {chain.nodes[node_id].task_name: who for node_id, who in paused.items()}
        _echo(exposition(summaries.values(), by_name).rstrip("\n"))
        return EXIT_OK

    async def serve(signals: _Signals) -> int:
        client = _client(settings, need_redis="metrics")
        store = store_for(client)

        async def scrape() -> bytes:
            summaries, paused = await asyncio.gather(
                read_runs(store, names, namespace=settings.namespace, last=METRICS_RECENT),
                paused_tasks(names, redis=client, namespace=settings.namespace),
            )
            return exposition(summaries.values(), paused).encode()

        try:
            await _check_server(client, settings, None)
            server = await serve_metrics(scrape, args.bind, args.serve)
            port = server.sockets[0].getsockname()[1]
            _echo(f"aiotasks: serving metrics on http://{args.bind}:{port}/metrics", sys.stderr)
            async with server:
                await server.serve_forever()
        except OSError as exc:
            raise UsageError(
                f"cannot serve metrics on {args.bind}:{args.serve}: {exc.strerror or exc}"
            ) from None
        finally:
            await client.aclose()
        return EXIT_OK

    return _in_loop(serve)


def _clear(args: argparse.Namespace, chain: Chain) -> int:
    """Remove success markers (``--task``, ``--downstream``) after a [y/N] on a terminal, or ``--yes``."""
    date = parse_run_key(args.date)
    if not args.yes and not sys.stdin.isatty():
        raise UsageError("refusing to remove success markers without --yes (stdin is not a terminal)")
    nodes = _chosen(chain, args.task)
    if args.downstream:
        nodes = [node for node in chain if node.id in dependents_of(chain, {node.id for node in nodes})]
    settings = _settings(args)
    code = _in_loop(lambda signals: _clear_markers(args, settings, chain, nodes, date))
    if args.command == "reset":  # after it worked: an error stays one line
        _echo("aiotasks: `reset` is now `clear` (same options, and --downstream); use `clear`", sys.stderr)
    return code


async def _clear_markers(
    args: argparse.Namespace, settings: Settings, chain: Chain, nodes: list[Node], date: str
) -> int:
    client = _client(settings, need_redis=args.command)
    try:
        states = await _lock_states(settings, client, nodes, date)
        marked = [node.id for node in nodes if states[node.id].completed]
        if not marked:
            _echo(f"{date}: no success markers to remove")
            return EXIT_OK
        if not args.yes:
            try:
                answer = await _ask(f"Remove the success markers of {', '.join(marked)} for {date}? [y/N] ")
            except asyncio.CancelledError:
                _echo("\nnothing removed")
                raise
            if answer.strip().lower() not in ("y", "yes"):
                _echo("nothing removed")
                return EXIT_OK
        removed = await clear(chain, date, tasks=marked, redis=client, namespace=settings.namespace)
    finally:
        await _close(client)
    if removed:
        _echo(f"{date}: removed the success markers of {', '.join(removed)}")
    else:
        _echo(f"{date}: no success markers to remove (they expired or were removed meanwhile)")
    return EXIT_OK


def _control(args: argparse.Namespace) -> int:
    """``pause`` / ``resume`` of one schedule or task of TARGET: checked, then one write (or none).

    Idempotent: a schedule or task already so is said so, nothing is written, and the exit code is 0
    (what was asked holds).
    """
    pausing = args.command == "pause"
    if args.schedule is not None:
        schedule = _schedule_named(args.target, load_schedules(args.target), args.schedule)
        what, name = "schedule", str(schedule.name)
    else:
        tasks = load_tasks(args.target)
        node = tasks.get(args.task)
        if node is None:
            raise InvalidChain(
                f"{args.target!r} has no task {args.task!r} (it has: " + ", ".join(map(repr, tasks)) + ")",
                args.task,
            )
        what, name = "task", node.task_name
    settings = _settings(args)

    async def act(signals: _Signals) -> int:
        client = _client(settings, need_redis=args.command)
        options: dict[str, Any] = {"redis": client, "namespace": settings.namespace}
        try:
            await _check_server(client, settings, None)
            if what == "schedule":
                changed = await (pause_schedule if pausing else resume_schedule)(name, **options)
                who = None if changed or not pausing else await _schedule_paused_by(client, settings, name)
            else:
                changed = await (pause_task if pausing else resume_task)(name, **options)
                who = None if changed or not pausing else (await paused_tasks([name], **options)).get(name)
        finally:
            await _close(client)
        _echo(control_line(what, name, pausing=pausing, changed=changed, by=who))
        return EXIT_OK

    return _in_loop(act)


async def _schedule_paused_by(client: AnyRedis, settings: Settings, name: str) -> str | None:
    paused, _ = await store_for(client).read_schedule(schedule_keys(name, namespace=settings.namespace))
    return paused


def _trigger(args: argparse.Namespace, schedules: list[Schedule]) -> int:
    """Ask the fleet to run one schedule's chain now (or run it here, with ``--here``).

    Everything is checked before anything is written: the schedule is one of
    TARGET's, the key one of its keys, ``--expires`` a sane number.
    """
    schedule = _schedule_named(args.target, schedules, args.schedule)
    key = trigger_key(schedule, args.key, current_clock().now())
    check_expires(args.expires)
    settings = _settings(args)
    if args.here:
        here = argparse.Namespace(**vars(args), window=1, max_concurrency=None, wait_timeout=None, only=None)
        me = f"{HOST}:{os.getpid()}"
        return _in_loop(
            lambda signals: _run_chain(here, schedule.chain, [key], settings, signals, triggered_by=me)
        )

    async def ask(signals: _Signals) -> int:
        client = _client(settings, need_redis="trigger")

        def taken(request: Triggered) -> None:
            if not args.json:
                _echo(f"schedule {request.schedule!r} {request.key}: taken by {request.taken_by}")

        try:
            await _check_server(client, settings, None)
            started = time.monotonic()
            done = await trigger(
                schedule,
                key=key,
                force=args.force,
                redis=client,
                namespace=settings.namespace,
                expires=args.expires,
                wait=args.wait,
                on_taken=taken,
            )
        finally:
            await _close(client)
        document: dict[str, Any] = {"schedule": done.schedule, "date": done.key, "taken_by": done.taken_by}
        if done.results is None:
            if args.json:
                _echo(to_json({**document, "exit_code": EXIT_OK}))
            return EXIT_OK
        summary = summarize(done.results, time.monotonic() - started)
        code = exit_code([summary], done.results.values())
        if args.json:
            document.update(tasks=done.results, summary=summary, store=store_for_display(settings))
            _echo(to_json({**document, "exit_code": code}))
        else:
            _echo("\n".join([summary_line(done.key, summary), *result_lines(done.results)]))
        return code

    return _in_loop(ask)


def _cancel(args: argparse.Namespace, tasks: dict[str, Node]) -> int:
    """Ask whoever runs a task for a date to cancel that run (``aiotasks.cancel``).

    Checked before anything is written: the task is one of TARGET's, the date
    a date or slot, ``--timeout`` (with ``--wait``) a positive number.
    """
    node = tasks.get(args.task)
    if node is None:
        raise InvalidChain(
            f"{args.target!r} has no task {args.task!r} (it has: " + ", ".join(map(repr, tasks)) + ")",
            args.task,
        )
    key = parse_run_key(args.date)
    if args.timeout is not None and not args.wait:
        raise UsageError("argument --timeout: only with --wait (it bounds the wait)")
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError(f"argument --timeout: must be a number of seconds above 0, not {args.timeout:g}")
    settings = _settings(args)

    async def ask(signals: _Signals) -> int:
        client = _client(settings, need_redis="cancel")
        try:
            await _check_server(client, settings, None)
            found = await request_cancel(node.task_name, key, redis=client, namespace=settings.namespace)
            document: dict[str, Any] = {
                "task": args.task,
                "date": key,
                "delivered": found.delivered,
                "run": found.holder or None,
                "requested_by": found.by if found.delivered else None,
                "stopped": None,
            }
            if not found.delivered:
                said = f"{args.task} {key}: nothing runs, nothing to cancel"
                code = EXIT_FAILED
            elif args.wait:
                await wait_stopped(found, redis=client, namespace=settings.namespace, timeout=args.timeout)
                document["stopped"] = True
                said = f"{args.task} {key}: run {found.holder} stopped, its lock is free"
                code = EXIT_OK
            else:
                said = (
                    f"{args.task} {key}: cancel of run {found.holder} requested by {found.by}; "
                    "it stops at its next lock renewal (within a third of its lock_timeout)"
                )
                code = EXIT_OK
        finally:
            await _close(client)
        _echo(to_json({**document, "exit_code": code}) if args.json else said)
        return code

    return _in_loop(ask)


#: What ``web`` says when its extra is not installed.
WEB_EXTRA = "the web console needs its extra: pip install 'aiotasks-redis[web]'"


def _token(args: argparse.Namespace) -> str | None:
    """The console's token: ``--token-file``'s content, else ``AIOTASKS_WEB_TOKEN``, else None."""
    if args.token_file is not None:
        try:
            text = Path(args.token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --token-file {args.token_file!r}: {type(exc).__name__}") from None
        if not text:
            raise UsageError(f"--token-file {args.token_file!r} is empty")
        return text
    return os.environ.get("AIOTASKS_WEB_TOKEN", "").strip() or None


def _web(args: argparse.Namespace) -> int:
    """Serve the web console of TARGET until SIGINT/SIGTERM (see ``aiotasks.web``)."""
    try:
        from .web import console
        from .web._serve import ConsoleServer, listen
    except ImportError:
        raise UsageError(WEB_EXTRA) from None
    target = _import_target(args.target)
    token = _token(args)
    settings = _settings(args)

    async def serve(signals: _Signals) -> int:
        client = _client(settings, need_redis="web")
        try:
            # Built before connecting: a target that is no chain or schedule is refused first.
            served = console(
                target, redis=client, namespace=settings.namespace, token=token, refresh=args.refresh
            )
            await _check_server(client, settings, None)
            try:
                sock = listen(args.bind, args.port)
            except OSError as exc:
                raise UsageError(
                    f"cannot serve the web console on {args.bind}:{args.port}: {exc.strerror or exc}"
                ) from None
            server = ConsoleServer(served, sock, access_log=args.verbose > 0)
            signals.first = ("stopping the web console", server.stop)
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            access = "controls unlock with the token" if token else "read-only: no token configured"
            _echo(f"aiotasks: web console on http://{shown}:{port}/ ({access})", sys.stderr)
            with sock:
                await server.serve()
        finally:
            await _close(client)
        return signals.exit_code or EXIT_OK

    return _in_loop(serve)


def _serve(args: argparse.Namespace, schedules: list[Schedule]) -> int:
    """Fire the schedules until SIGTERM/SIGINT: then stop firing, give runs ``--grace``, cancel, exit."""
    settings = _settings(args)

    async def serve(signals: _Signals) -> int:
        client = _client(settings)
        try:
            scheduler = Scheduler(
                schedules,
                redis=client,
                namespace=settings.namespace,
                max_concurrency=args.max_concurrency,
                window=args.window,
                grace=args.grace,
                triggers=args.triggers,
            )
            if settings.redis_url is not None:
                await _check_server(client, settings, None)
            signals.first = (
                f"no new slots; running chains get {args.grace:g}s to finish, "
                "then are cancelled and their locks released",
                scheduler.request_stop,
            )
            await scheduler.serve()
        finally:
            await _close(client)
        return signals.exit_code or EXIT_OK

    return _in_loop(serve, fast=True)


async def _close(client: AnyRedis) -> None:
    """Close the command's client once the door has sent what it holds, for at most ``DRAIN_WAIT`` s.

    After a signal, a busy door may still hold the releases of the cancelled
    runs queued: the loop ending first would leave those locks for their TTL.
    The wait is shielded (the command's own cancellation does not cut it) and
    bounded (a stalled Redis does not hold the exit; a second signal exits).
    """
    try:
        await shielded(store_for(client).drain(DRAIN_WAIT))
    finally:
        await client.aclose()


async def _ask(prompt: str) -> str:
    """Ask on the terminal and return the line typed ("" at end of input).

    The event loop waits for the line (no thread, no blocking ``input()``), so
    Ctrl-C reaches the CLI's signal handler and cancels the wait at once, even
    when it comes the instant the prompt appears: a blocking read would miss a
    signal that arrives just before it starts.
    """
    loop = asyncio.get_running_loop()
    sys.stdout.write(prompt)
    sys.stdout.flush()
    fd = sys.stdin.fileno()
    typed: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not typed.done():
            typed.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await typed
    finally:
        loop.remove_reader(fd)
    # A terminal in canonical mode hands over one whole line per read.
    return os.read(fd, 4096).decode(errors="replace")


def _plan(args: argparse.Namespace, chain: Chain) -> int:
    render = {"text": plan_text, "mermaid": plan_mermaid, "dot": plan_dot}[args.format]
    _echo(render(chain))
    return EXIT_OK


def _configure_logging(verbosity: int) -> None:
    level = logging.ERROR if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("aiotasks: %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("aiotasks")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def loop_factory(fast: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when ``fast`` and uvloop is installed, else None (asyncio's own).

    uvloop runs the loop, its timers, futures' callbacks and socket transports
    in C: the part of a run's CPU that aiotasks' own code can't cut
    (``docs/explanation/performance.md``). Optional: ``aiotasks-redis[uvloop]``.
    """
    if not fast:
        return None
    try:
        import uvloop  # optional, and only for the commands that run tasks
    except ImportError:
        return None
    return uvloop.new_event_loop


def _in_loop(command: Callable[[_Signals], Awaitable[T]], *, fast: bool = False) -> T:
    """Run ``command`` in a new event loop; the first SIGINT/SIGTERM cancels it, the second exits at once.

    :param fast: on uvloop when it is installed (``run`` and ``serve``, see :func:`loop_factory`).
    :raises CliError: with exit code 130/143 when a signal cancelled the command.
    """
    signals = _Signals()

    async def supervised() -> T:
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        assert main_task is not None

        def on_signal(signum: int) -> None:
            signals.received.append(signum)
            if len(signals.received) == 1:
                name = signal.Signals(signum).name
                if signals.first is not None:
                    said, act = signals.first
                    _echo(f"aiotasks: {name} received: {said}", sys.stderr)
                    act()
                    return
                _echo(
                    f"aiotasks: {name} received: cancelling running tasks and releasing their locks",
                    sys.stderr,
                )
                main_task.cancel()
            else:
                _echo("aiotasks: second signal: exiting now", sys.stderr)
                os._exit(signals.exit_code or EXIT_SIGINT)

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            return await command(signals)
        except asyncio.CancelledError:
            code = signals.exit_code
            if code is None:
                raise
            raise Interrupted(code) from None
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    with asyncio.Runner(loop_factory=loop_factory(fast)) as runner:
        return runner.run(supervised())


def _fail(message: str, code: int) -> int:
    _echo(f"aiotasks: error: {message}", sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m aiotasks`` and the ``aiotasks`` script; returns the exit code."""
    try:
        args = _parser().parse_args(argv)
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    _configure_logging(getattr(args, "verbose", 0))
    try:
        # Imported before any event loop runs: a target may call asyncio.run() at import.
        if args.command == "serve":
            return _serve(args, load_schedules(args.target))
        if args.command == "trigger":
            return _trigger(args, load_schedules(args.target))
        if args.command == "cancel":
            return _cancel(args, load_tasks(args.target))
        if args.command == "web":
            return _web(args)
        if args.command in ("pause", "resume"):
            return _control(args)
        if args.command in ("status", "history"):  # a chain, or schedules: their tasks and controls
            found = _import_target(args.target)
            schedules = _as_schedules(found) or []
            chain = Chain.merged(s.chain for s in schedules) if schedules else _as_chain(found, args.target)
            return (_status if args.command == "status" else _history)(args, chain, schedules)
        chain = load_chain(args.target)
        command = {
            "run": _run,
            "plan": _plan,
            "metrics": _metrics,
            "clear": _clear,
            "reset": _clear,
        }[args.command]
        return command(args, chain)
    except Interrupted as exc:
        return exc.code
    except CliError as exc:
        return _fail(str(exc), exc.code)
    except InvalidInput as exc:
        return _fail(str(exc), EXIT_USAGE)
    except RedisUnavailable as exc:
        return _fail(str(exc), EXIT_REDIS)
    except AioTasksError as exc:
        return _fail(str(exc), EXIT_FAILED)
    except rex.RedisError as exc:
        return _fail(f"Redis error: {type(exc).__name__}: {exc}", EXIT_REDIS)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_SIGINT)
    except BrokenPipeError:
        return EXIT_FAILED
