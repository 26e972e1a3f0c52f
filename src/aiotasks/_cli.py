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
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

import anyio.to_thread

from . import __version__
from ._chain import Chain, ChainRun, Node, check_run_options, prepare_run
from ._config import Settings, in_process_client
from ._errors import AioTasksError, InvalidChain, InvalidInput, RedisUnavailable
from ._keys import date_range, parse_date, task_keys
from ._metrics import exposition, serve_metrics
from ._records import TaskSummary, read_grid, read_runs
from ._store import AnyRedis, LockState, store_for
from ._task import Task
from ._views import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REDIS,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_USAGE,
    cell_rows,
    exit_code,
    grid_json,
    grid_text,
    history_text,
    live_frame,
    plan_dot,
    plan_mermaid,
    plan_text,
    status_cells_text,
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
    day = status.add_mutually_exclusive_group()
    day.add_argument("--date", help="YYYYMMDD (default: today)")
    day.add_argument("--from", dest="date_from", metavar="YYYYMMDD", help="first date of a grid")
    status.add_argument("--to", dest="date_to", metavar="YYYYMMDD", help="last date of a grid (with --from)")
    redis_options(status)
    status.add_argument("--json", action="store_true", help="print one JSON document")

    history = commands.add_parser("history", help="the recorded runs, newest first, from every host")
    target(history)
    history.add_argument("--task", action="append", metavar="TASK", help="only this task (repeatable)")
    history.add_argument("--last", type=int, default=20, metavar="N", help="how many runs (default 20)")
    redis_options(history)
    history.add_argument("--json", action="store_true", help="print one JSON document")

    metrics = commands.add_parser("metrics", help="Prometheus text exposition computed from the records")
    target(metrics)
    metrics.add_argument("--serve", type=int, metavar="PORT", help="serve it over HTTP instead of printing")
    metrics.add_argument("--bind", default="127.0.0.1", help="address for --serve (default 127.0.0.1)")
    redis_options(metrics)

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
    if isinstance(found, Chain):
        return found
    if isinstance(found, Task):
        return Chain([found])
    if not isinstance(found, list | tuple):
        raise UsageError(f"{target!r} is a {type(found).__name__}, not a chain (a list of tasks)")
    return Chain(found)


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
    return [parse_date(args.date)]


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
    settings = _settings(args)
    client = _client(settings)
    runs: list[dict[str, Any]] = []
    try:
        if settings.redis_url is not None:
            await _ping(client)
        live = _Live(sys.stdout) if sys.stdout.isatty() and not args.json else None
        for date in dates:
            run = prepare_run(
                chain,
                date,
                redis=client,
                max_concurrency=args.max_concurrency,
                namespace=settings.namespace,
                force=args.force,
                wait_timeout=args.wait_timeout,
            )
            started = time.monotonic()
            follower = asyncio.create_task(live.follow(run)) if live else None
            try:
                results = await run.run()
            finally:
                if follower is not None and live is not None:
                    follower.cancel()
                    live.clear()
            summary = summarize(results, time.monotonic() - started)
            runs.append({"date": date, "tasks": results, "summary": summary})
            if not args.json:
                _echo("\n".join([summary_line(date, summary), *task_lines(run)]))
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
    dates = _dates(args)
    settings = _settings(args)
    client = _client(settings, need_redis=args.command)
    try:
        store = store_for(client)
        await store.ping()
        nodes = list(chain)
        cells = await read_grid(store, [n.task_name for n in nodes], dates, namespace=settings.namespace)
    finally:
        await client.aclose()
    grid = {node.id: cells[node.task_name] for node in nodes}
    color = sys.stdout.isatty() and not args.json
    if args.date_from is None:
        date = dates[0]
        day = {name: by_date[date] for name, by_date in grid.items()}
        document: Any = {"date": date, "tasks": cell_rows(day)}
        _echo(to_json(document) if args.json else status_cells_text(date, day, color=color))
    else:
        _echo(to_json(grid_json(dates, grid)) if args.json else grid_text(dates, grid, color=color))
    return EXIT_OK


def _chosen(chain: Chain, only: list[str] | None) -> list[Node]:
    if only:
        unknown = [name for name in only if name not in chain.nodes]
        if unknown:
            raise InvalidChain(f"no task {unknown[0]!r} in the chain", unknown[0])
        return [node for node in chain if node.id in only]
    return list(chain)


async def _read_runs(args: argparse.Namespace, nodes: list[Node], last: int) -> dict[str, TaskSummary]:
    settings = _settings(args)
    client = _client(settings, need_redis=args.command)
    try:
        store = store_for(client)
        await store.ping()
        names = list(dict.fromkeys(node.task_name for node in nodes))
        return await read_runs(store, names, namespace=settings.namespace, last=last)
    finally:
        await client.aclose()


async def _history(args: argparse.Namespace) -> int:
    nodes = _chosen(load_chain(args.target), args.task)
    if args.last < 1:
        raise UsageError(f"--last must be at least 1, not {args.last}")
    summaries = await _read_runs(args, nodes, args.last)
    runs = sorted(
        (run for summary in summaries.values() for run in summary.runs),
        key=lambda run: (run.started or 0, run.task),
        reverse=True,
    )[: args.last]
    _echo(to_json({"runs": [run.to_json() for run in runs]}) if args.json else history_text(runs))
    return EXIT_OK


#: How many recent runs per task ``metrics`` reads to count those running.
METRICS_RECENT = 50


async def _metrics(args: argparse.Namespace) -> int:
    nodes = list(load_chain(args.target))
    if args.serve is None:
        _echo(exposition((await _read_runs(args, nodes, METRICS_RECENT)).values()).rstrip("\n"))
        return EXIT_OK
    if not 0 <= args.serve <= 65535:
        raise UsageError(f"--serve must be a port from 0 to 65535, not {args.serve}")
    settings = _settings(args)
    client = _client(settings, need_redis=args.command)
    store = store_for(client)
    names = list(dict.fromkeys(node.task_name for node in nodes))

    async def scrape() -> bytes:
        summaries = await read_runs(store, names, namespace=settings.namespace, last=METRICS_RECENT)
        return exposition(summaries.values()).encode()

    try:
        await store.ping()
        server = await serve_metrics(scrape, args.bind, args.serve)
        port = server.sockets[0].getsockname()[1]
        _echo(f"aiotasks: serving metrics on http://{args.bind}:{port}/metrics", sys.stderr)
        async with server:
            await server.serve_forever()
    except OSError as exc:
        raise UsageError(f"cannot serve metrics on {args.bind}:{args.serve}: {exc.strerror or exc}") from None
    finally:
        await client.aclose()
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
        if args.command == "history":
            return await _history(args)
        if args.command == "metrics":
            return await _metrics(args)
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
