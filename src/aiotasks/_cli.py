"""``python -m aiotasks``: run chains from cron, systemd timers and Kubernetes CronJobs.

This is the only module that knows about terminals, signals and exit codes.
Errors are one line on stderr (``aiotasks: error: ...``), never a traceback,
and never contain a Redis password. Exit codes:

* 0 - every task succeeded, or was skipped as already completed (or, for a
  recurring task, because another worker is running it right now);
* 1 - some task failed, or was not run because a dependency did not succeed;
* 2 - bad usage or input: a bad date, a target that can't be imported or is
  not a chain, an invalid chain, a bad option;
* 3 - Redis unreachable, too slow, or refusing our credentials;
* 130 / 143 - interrupted by SIGINT / SIGTERM: running tasks were cancelled and
  their locks released. A second signal exits at once (a sync body still
  running in a thread then keeps its lock until its ``lock_timeout``).
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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

import anyio.to_thread

from . import __version__
from ._backfill import check_window, run_window
from ._chain import Chain, ChainRun, Node, check_run_options, prepare_run
from ._config import Settings, in_process_client
from ._errors import AioTasksError, InvalidChain, InvalidInput, RedisUnavailable
from ._keys import date_range, parse_date, parse_run_key, task_keys
from ._schedule import Schedule
from ._scheduler import Scheduler
from ._store import AnyRedis, LockState, store_for
from ._task import Task
from ._views import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REDIS,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_USAGE,
    exit_code,
    live_frame,
    plan_dot,
    plan_mermaid,
    plan_text,
    status_rows,
    status_text,
    summarize,
    summary_line,
    task_lines,
    to_json,
)

__all__ = ["main"]

logger = logging.getLogger("aiotasks.cli")

IN_PROCESS_NOTICE = (
    "aiotasks: no Redis configured (--redis-url or AIOTASKS_REDIS_URL): using an in-process store, "
    "which coordinates nothing across processes"
)
LIVE_INTERVAL = 0.2


def _echo(text: str, stream: IO[str] | None = None) -> None:
    """Write one line (the CLI's only output path; the library itself never prints)."""
    out = sys.stdout if stream is None else stream
    out.write(text + "\n")
    out.flush()


class UsageError(Exception):
    """Bad usage detected by the CLI itself (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="aiotasks",
        description="Run chains of once-a-day tasks safely from many processes and machines.",
        epilog="Exit codes: 0 ok, 1 a task failed or was blocked, 2 bad usage or input, "
        "3 Redis unavailable, 130/143 interrupted. See README.md.",
    )
    parser.add_argument("--version", action="version", version=f"aiotasks {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def target(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("target", help="the chain: package.module:attr or path/to/file.py:attr")

    def redis_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--redis-url", help="Redis URL (default: $AIOTASKS_REDIS_URL)")
        sub.add_argument(
            "--cluster", action="store_true", default=None, help="the URL is a Redis Cluster node"
        )
        sub.add_argument("--namespace", help="key prefix (default: $AIOTASKS_NAMESPACE)")
        sub.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")

    run = commands.add_parser("run", help="run a chain for a date or a range of dates")
    target(run)
    when = run.add_mutually_exclusive_group()
    when.add_argument("--date", help="YYYYMMDD (default: today)")
    when.add_argument("--from", dest="date_from", metavar="YYYYMMDD", help="first date of a backfill")
    run.add_argument("--to", dest="date_to", metavar="YYYYMMDD", help="last date of a backfill (with --from)")
    redis_options(run)
    run.add_argument("--max-concurrency", type=int, help="how many tasks may run at once")
    run.add_argument(
        "--window", type=int, default=1, help="dates of a backfill in flight at once, oldest first (1)"
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

    status = commands.add_parser("status", help="show each task as completed, running or pending")
    target(status)
    status.add_argument("--date", help="YYYYMMDD (default: today)")
    redis_options(status)
    status.add_argument("--json", action="store_true", help="print one JSON document")

    serve = commands.add_parser("serve", help="fire schedules until stopped (run it on every replica)")
    serve.add_argument("target", help="a Schedule or a list of them: package.module:attr or file.py:attr")
    redis_options(serve)
    serve.add_argument("--grace", type=float, default=30.0, help="seconds running chains get on SIGTERM (30)")
    serve.add_argument("--max-concurrency", type=int, help="how many task bodies may run at once")
    serve.add_argument("--window", type=int, default=1, help="slots of a catch-up in flight at once (1)")

    reset = commands.add_parser("reset", help="remove success markers so tasks run again")
    target(reset)
    reset.add_argument("--date", help="YYYYMMDD (default: today)")
    reset.add_argument("--task", action="append", metavar="TASK", help="only this task (repeatable)")
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    redis_options(reset)
    return parser


def load_chain(target: str) -> Chain:
    """Import ``package.module:attr`` or ``path/to/file.py:attr`` and validate the chain it names.

    :raises UsageError: the target can't be imported or does not name a chain.
    :raises InvalidChain: the chain is invalid.
    """
    found = _import_target(target)
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
    if isinstance(found, Schedule):
        return [found]
    if isinstance(found, list | tuple) and found and all(isinstance(item, Schedule) for item in found):
        return list(found)
    raise UsageError(f"{target!r} holds no Schedule (a Schedule or a list of them): {found!r}"[:300])


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
    changes: dict[str, Any] = {}
    if args.redis_url:
        changes["redis_url"] = args.redis_url
    if args.cluster:
        changes["cluster"] = True
    if args.namespace:
        changes["namespace"] = args.namespace
    return settings.with_options(**changes) if changes else settings


def _client(settings: Settings, *, need_redis: str | None = None) -> AnyRedis:
    if settings.redis_url is None:
        if need_redis:
            raise UsageError(f"{need_redis} needs a Redis: pass --redis-url or set AIOTASKS_REDIS_URL")
        _echo(IN_PROCESS_NOTICE, sys.stderr)
        return in_process_client()
    return settings.create_client()


async def _ping(client: AnyRedis) -> None:
    await store_for(client).ping()


def _dates(args: argparse.Namespace) -> list[str]:
    if args.date_to and not args.date_from:
        raise UsageError("--to needs --from")
    if args.date_from:
        if not args.date_to:
            raise UsageError("--from needs --to")
        return date_range(parse_date(args.date_from), parse_date(args.date_to))
    return [parse_run_key(args.date)]


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


async def _run(args: argparse.Namespace) -> int:
    chain = load_chain(args.target)
    if args.only:
        chain = chain.select(args.only)
    dates = _dates(args)
    check_run_options(args.max_concurrency, args.wait_timeout)
    check_window(args.window)
    settings = _settings(args)
    client = _client(settings)
    runs: list[dict[str, Any]] = []
    try:
        if settings.redis_url is not None:
            await _ping(client)
        live = _Live(sys.stdout) if sys.stdout.isatty() and not args.json and args.window == 1 else None
        # One semaphore for every date in flight: --max-concurrency bounds bodies overall.
        limit = asyncio.Semaphore(args.max_concurrency) if args.max_concurrency else None
        started: dict[str, float] = {}
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
                )
                started[date] = time.monotonic()
                if live is not None:
                    followers[date] = asyncio.create_task(live.follow(run))
                yield run

        def finished(run: ChainRun, results: dict[str, dict[str, Any]]) -> None:
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
        runs.sort(key=lambda entry: str(entry["date"]))
    finally:
        await client.aclose()
    code = exit_code([entry["summary"] for entry in runs])
    if args.json:
        document: dict[str, Any] = dict(runs[0]) if len(runs) == 1 else {"runs": runs}
        document["store"] = store_for_display(settings)
        document["exit_code"] = code
        _echo(to_json(document))
    return code


def store_for_display(settings: Settings) -> str:
    """Where the run's locks live, without credentials."""
    if settings.redis_url is None:
        return "in-process (coordinates nothing across processes)"
    return settings.redacted_url


async def _lock_states(
    args: argparse.Namespace, nodes: Sequence[Node], date: str
) -> tuple[Settings, AnyRedis, dict[str, LockState]]:
    """Read the marker, holder and TTL of each task (one coalesced batch)."""
    settings = _settings(args)
    client = _client(settings, need_redis=args.command)
    try:
        store = store_for(client)
        await store.ping()
        keys = {
            node.id: task_keys(node.task_name, date, namespace=settings.namespace, cluster=store.cluster)
            for node in nodes
        }
        states = await asyncio.gather(*(store.status(k) for k in keys.values()))
    except BaseException:
        await client.aclose()
        raise
    return settings, client, dict(zip(keys, states, strict=True))


async def _status(args: argparse.Namespace) -> int:
    chain = load_chain(args.target)
    date = parse_run_key(args.date)
    _, client, states = await _lock_states(args, list(chain), date)
    await client.aclose()
    rows = status_rows(states)
    _echo(to_json({"date": date, "tasks": rows}) if args.json else status_text(date, rows))
    return EXIT_OK


async def _reset(args: argparse.Namespace) -> int:
    chain = load_chain(args.target)
    date = parse_date(args.date)
    if not args.yes and not sys.stdin.isatty():
        raise UsageError("refusing to remove success markers without --yes (stdin is not a terminal)")
    nodes = list(chain)
    if args.task:
        unknown = [name for name in args.task if name not in chain.nodes]
        if unknown:
            raise InvalidChain(f"no task {unknown[0]!r} in the chain", unknown[0])
        nodes = [node for node in nodes if node.id in args.task]
    settings, client, states = await _lock_states(args, nodes, date)
    try:
        marked = [name for name, state in states.items() if state.completed]
        if not marked:
            _echo(f"{date}: no success markers to remove")
            return EXIT_OK
        if not args.yes:
            prompt = f"Remove the success markers of {', '.join(marked)} for {date}? [y/N] "
            answer = await anyio.to_thread.run_sync(input, prompt)
            if answer.strip().lower() not in ("y", "yes"):
                _echo("nothing removed")
                return EXIT_OK
        store = store_for(client)
        names = {node.id: node.task_name for node in nodes}
        await asyncio.gather(
            *(
                store.delete(
                    task_keys(names[name], date, namespace=settings.namespace, cluster=store.cluster).success
                )
                for name in marked
            )
        )
        _echo(f"{date}: removed the success markers of {', '.join(marked)}")
    finally:
        await client.aclose()
    return EXIT_OK


async def _serve(args: argparse.Namespace) -> int:
    """Fire the schedules until SIGTERM/SIGINT: then stop firing, give runs ``--grace``, cancel, exit."""
    schedules = load_schedules(args.target)
    settings = _settings(args)
    client = _client(settings)
    received: list[int] = []
    try:
        scheduler = Scheduler(
            schedules,
            redis=client,
            namespace=settings.namespace,
            max_concurrency=args.max_concurrency,
            window=args.window,
            grace=args.grace,
        )
        if settings.redis_url is not None:
            await _ping(client)
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            received.append(signum)
            if len(received) > 1:
                _echo("aiotasks: second signal: exiting now", sys.stderr)
                os._exit(_signal_exit(received[0]))
            _echo(
                f"aiotasks: {signal.Signals(signum).name} received: no new slots; running chains get "
                f"{args.grace:g}s to finish, then are cancelled and their locks released",
                sys.stderr,
            )
            scheduler.request_stop()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        await scheduler.serve()
    finally:
        await client.aclose()
    return _signal_exit(received[0]) if received else EXIT_OK


def _plan(args: argparse.Namespace) -> int:
    chain = load_chain(args.target)
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


async def _main_async(args: argparse.Namespace) -> int:
    """Run the command; the first SIGINT/SIGTERM cancels it, the second exits at once."""
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) == 1:
            name = signal.Signals(signum).name
            _echo(
                f"aiotasks: {name} received: cancelling running tasks and releasing their locks", sys.stderr
            )
            main_task.cancel()
        else:
            _echo("aiotasks: second signal: exiting now", sys.stderr)
            os._exit(_signal_exit(received[0]))

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        if args.command == "run":
            return await _run(args)
        if args.command == "status":
            return await _status(args)
        if args.command == "serve":
            return await _serve(args)
        return await _reset(args)
    except asyncio.CancelledError:
        if not received:
            raise
        return _signal_exit(received[0])
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _signal_exit(signum: int) -> int:
    return EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM


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
        if args.command == "plan":
            return _plan(args)
        return asyncio.run(_main_async(args))
    except (UsageError, InvalidInput) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except RedisUnavailable as exc:
        return _fail(str(exc), EXIT_REDIS)
    except AioTasksError as exc:
        return _fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_SIGINT)
    except BrokenPipeError:
        return EXIT_FAILED
