"""``python -m aiotasks`` in real subprocesses: output, exit codes, bad input, signals (issue 3)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.servers import RedisServer, free_port
from tests.support import until

ROOT = Path(__file__).resolve().parent.parent
CHAINS = "tests/chains/cli_chains.py"
DATE = "20261125"
SECRET = "s3cr3t-pw-0451"


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI child: no AIOTASKS_* settings from the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOTASKS_")}
    env.update(extra)
    return env


def cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m aiotasks ARGS`` to completion (bounded), from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "aiotasks", *args],
        cwd=ROOT,
        env=env if env is not None else child_env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_one_error_line(done: subprocess.CompletedProcess[str], code: int, *named: str) -> str:
    """Exit ``code``, exactly one stderr line starting ``aiotasks: error:`` naming each of ``named``."""
    assert done.returncode == code, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("aiotasks: error: "), lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    for name in named:
        assert name in lines[0]
    return lines[0]


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A sync client on the clean session server, for checking what the CLI left."""
    with redis.Redis.from_url(redis_url) as client:
        yield client


def with_redis(url: str, *args: str) -> Sequence[str]:
    return (*args, "--redis-url", url)


# -- the in-process store and output ------------------------------------------------------------------


def test_example_runs_without_redis_and_says_so() -> None:
    """The example runs on the in-process store, saying in one stderr line that it coordinates nothing."""
    done = cli("run", "examples/seed_chain.py:chain", "--date", DATE)
    assert done.returncode == 0, done.stderr
    notice = done.stderr.strip().splitlines()
    assert len(notice) == 1
    assert "in-process store" in notice[0]
    assert "coordinates nothing across processes" in notice[0]
    assert done.stdout.startswith(f"{DATE}: 3 tasks: 3 succeeded, 0 already done")
    for task in ("task_contributions_analysis", "task_rag_indexing", "task_odds"):
        assert task in done.stdout


def test_json_is_one_document_of_result_dicts() -> None:
    """--json prints one document: tasks maps id -> the seed's result dict, plus summary and exit code."""
    done = cli("run", "examples/seed_chain.py:chain", "--date", DATE, "--json")
    assert done.returncode == 0
    document = json.loads(done.stdout)
    assert document["date"] == DATE
    assert document["exit_code"] == 0
    assert document["summary"]["success"] == 3
    assert document["store"].startswith("in-process")
    analysis = document["tasks"]["task_contributions_analysis"]
    for key in ("task", "date", "task_id", "status", "errors", "warnings", "reason"):
        assert key in analysis
    assert analysis["contributions_processed"] == 5


def test_failed_task_exits_1_and_blocks_dependents(redis_url: str) -> None:
    """A failing task: exit 1; its dependent is skipped (dependency_failed, blocked_by); others run."""
    done = cli(*with_redis(redis_url, "run", f"{CHAINS}:failing", "--date", DATE, "--json"))
    assert done.returncode == 1, done.stderr
    tasks = json.loads(done.stdout)["tasks"]
    assert tasks["a"]["status"] == "failed"
    assert tasks["a"]["errors"] == ["Unexpected error: RuntimeError: a always fails"]
    assert (tasks["b"]["reason"], tasks["b"]["blocked_by"]) == ("dependency_failed", "a")
    assert tasks["c"]["status"] == "success"


# -- bad input: exit 2, one line, nothing written -------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("run", f"{CHAINS}:chain", "--date", "2026-11-25"), ["'2026-11-25'"]),
        (("run", f"{CHAINS}:chain", "--date", "20260231"), ["'20260231'"]),
        (("run", f"{CHAINS}:chain", "--from", "20261125", "--to", "20261120"), ["reversed"]),
        (("run", f"{CHAINS}:chain", "--to", "20261125"), ["--to needs --from"]),
        (("run", f"{CHAINS}:chain", "--from", "20261125"), ["--from needs --to"]),
        (("run", "no_such_module_xyz:chain"), ["no_such_module_xyz", "ModuleNotFoundError"]),
        (("run", "tests/chains/missing.py:chain"), ["no such file"]),
        (("run", f"{CHAINS}:nothing_here"), ["nothing_here"]),
        (("run", f"{CHAINS}:not_a_chain"), ["not a chain"]),
        (("run", f"{CHAINS}:cyclic"), ["cycle", "x -> y -> x"]),
        (("run", f"{CHAINS}:dangling"), ["'ghost'"]),
        (("run", "no-colon"), ["package.module:attr"]),
        (("run", f"{CHAINS}:chain", "--max-concurrency", "many"), ["many"]),
        (("run", f"{CHAINS}:chain", "--max-concurrency", "0"), ["--max-concurrency", "not 0"]),
        (("run", f"{CHAINS}:chain", "--only", "zz"), ["'zz'"]),
        (("explode",), ["explode"]),
        (("status", f"{CHAINS}:chain"), ["needs a Redis"]),
        (("reset", f"{CHAINS}:chain", "--yes"), ["needs a Redis"]),
        (("reset", f"{CHAINS}:chain", "--task", "zz", "--yes"), ["no task 'zz'"]),
        (("history", f"{CHAINS}:chain", "--task", "zz"), ["no task 'zz'"]),
    ],
    ids=lambda value: "-".join(value) if isinstance(value, tuple) else None,
)
def test_bad_input_exits_2_with_one_line(args: tuple[str, ...], named: list[str]) -> None:
    """Bad dates, ranges, targets, chains, options: exit 2, one error line naming the culprit."""
    assert_one_error_line(cli(*args), 2, *named)


def test_syntax_error_in_target_is_one_line(tmp_path: Path) -> None:
    """A target file that does not even parse: exit 2 naming the file's error, no traceback."""
    broken = tmp_path / "broken.py"
    broken.write_text("def oops(:\n")
    assert_one_error_line(cli("run", f"{broken}:chain"), 2, "SyntaxError")


def test_bad_input_writes_nothing_to_redis(redis_url: str, sync_redis: redis.Redis) -> None:
    """With a real Redis configured, bad input still sends no command (only the server's own INFO)."""
    before = sync_redis.info("commandstats")
    for args in (("--date", "99999999"), ("--only", "zz")):
        assert cli(*with_redis(redis_url, "run", f"{CHAINS}:chain", *args)).returncode == 2
    after = sync_redis.info("commandstats")
    assert {k for k in after if after[k] != before.get(k)} <= {"cmdstat_info"}
    assert sync_redis.keys("*") == []  # not even a run record


# -- Redis trouble: exit 3, and no password anywhere -------------------------------------------------


def test_unreachable_redis_exits_3_without_the_password() -> None:
    """A configured Redis nobody listens on: exit 3, one line naming host:port, never the password."""
    port = free_port()
    url = f"redis://:{SECRET}@127.0.0.1:{port}/6"
    for env, args in ((child_env(), ("--redis-url", url)), (child_env(AIOTASKS_REDIS_URL=url), ())):
        done = cli("run", f"{CHAINS}:chain", "--date", DATE, "-vv", *args, env=env)
        line = assert_one_error_line(done, 3, f"127.0.0.1:{port}")
        assert SECRET not in done.stdout + done.stderr
        assert "unavailable" in line


def test_wrong_password_exits_3_naming_the_problem() -> None:
    """A server with requirepass and a wrong password: exit 3, the error says credentials were refused."""
    with RedisServer(password=SECRET) as server:
        url = f"redis://:wrong-{SECRET}@127.0.0.1:{server.port}/0"
        done = cli("run", f"{CHAINS}:chain", "--redis-url", url, "-vv")
        line = assert_one_error_line(done, 3, "credentials")
        assert SECRET not in done.stdout + done.stderr
        assert "refused" in line


def test_password_never_shown_on_success() -> None:
    """With the right password and -vv logging, neither stdout nor stderr shows it."""
    with RedisServer(password=SECRET) as server:
        done = cli(
            "run",
            f"{CHAINS}:chain",
            "--date",
            DATE,
            "-vv",
            "--json",
            env=child_env(AIOTASKS_REDIS_URL=server.url),
        )
        assert done.returncode == 0, done.stderr
        assert SECRET not in done.stdout + done.stderr
        assert json.loads(done.stdout)["store"] == f"redis://:***@127.0.0.1:{server.port}/0"


# -- plan, status, reset ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("text", "2. b  after a"), ("mermaid", 'n2["b"]'), ("dot", '"a" -> "b";')],
)
def test_plan_touches_no_redis(fmt: str, expected: str) -> None:
    """plan prints the order in text, Mermaid or DOT, even with AIOTASKS_REDIS_URL pointing nowhere."""
    env = child_env(AIOTASKS_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    done = cli("plan", f"{CHAINS}:chain", "--format", fmt, env=env)
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout
    assert done.stderr == ""


def test_status_shows_completed_running_pending(redis_url: str, sync_redis: redis.Redis) -> None:
    """status reads each task: completed (marker), running (holder id, TTL), pending."""
    assert (
        cli(*with_redis(redis_url, "run", f"{CHAINS}:chain", "--date", DATE, "--only", "a")).returncode == 0
    )
    sync_redis.set(f"lock:b:{DATE}", "holder42", px=120_000)
    done = cli(*with_redis(redis_url, "status", f"{CHAINS}:chain", "--date", DATE, "--json"))
    assert done.returncode == 0, done.stderr
    rows = {row["task"]: row for row in json.loads(done.stdout)["tasks"]}
    assert rows["a"]["state"] == "completed"
    assert (rows["b"]["state"], rows["b"]["holder"]) == ("running", "holder42")
    assert 0 < rows["b"]["ttl_s"] <= 120
    assert rows["c"]["state"] == "pending"
    human = cli(*with_redis(redis_url, "status", f"{CHAINS}:chain", "--date", DATE)).stdout
    assert "holder holder42" in human


def test_reset_removes_markers_so_tasks_run_again(redis_url: str, sync_redis: redis.Redis) -> None:
    """reset --yes (optionally --task) removes markers; the next run reruns exactly those tasks."""
    assert cli(*with_redis(redis_url, "run", f"{CHAINS}:chain", "--date", DATE)).returncode == 0
    done = cli(*with_redis(redis_url, "reset", f"{CHAINS}:chain", "--date", DATE, "--task", "c", "--yes"))
    assert done.returncode == 0, done.stderr
    assert sync_redis.exists(f"success:c:{DATE}") == 0
    assert sync_redis.exists(f"success:a:{DATE}") == 1
    rerun = json.loads(cli(*with_redis(redis_url, "run", f"{CHAINS}:chain", "--date", DATE, "--json")).stdout)
    assert {k: v["status"] for k, v in rerun["tasks"].items()} == {
        "a": "skipped",
        "b": "skipped",
        "c": "success",
    }


def test_reset_refuses_without_yes_when_not_interactive(redis_url: str, sync_redis: redis.Redis) -> None:
    """Without --yes and with stdin not a terminal, reset removes nothing and exits 2."""
    assert cli(*with_redis(redis_url, "run", f"{CHAINS}:chain", "--date", DATE)).returncode == 0
    done = cli(*with_redis(redis_url, "reset", f"{CHAINS}:chain", "--date", DATE), stdin="y\n")
    assert_one_error_line(done, 2, "--yes")
    assert len(sync_redis.keys("success:*")) == 3


# -- run options -----------------------------------------------------------------------------------------


def test_backfill_runs_each_date_in_order(redis_url: str) -> None:
    """--from/--to runs every date of the range in order; --json holds one entry per date."""
    done = cli(
        *with_redis(redis_url, "run", f"{CHAINS}:chain", "--from", "20261130", "--to", "20261202", "--json")
    )
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)["runs"]
    assert [run["date"] for run in runs] == ["20261130", "20261201", "20261202"]
    assert all(run["summary"]["success"] == 3 for run in runs)


def test_only_runs_a_task_and_what_it_needs(redis_url: str) -> None:
    """--only b runs a (its dependency) and b, not c."""
    done = cli(*with_redis(redis_url, "run", f"{CHAINS}:chain", "--date", DATE, "--only", "b", "--json"))
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)["tasks"]) == {"a", "b"}


def test_force_reruns_completed_tasks(redis_url: str, sync_redis: redis.Redis) -> None:
    """--force ignores markers: completed tasks run again (and --max-concurrency 1 still completes)."""
    assert cli(*with_redis(redis_url, "run", f"{CHAINS}:chain", "--date", DATE)).returncode == 0
    done = cli(
        *with_redis(redis_url, "run", f"{CHAINS}:chain", "--date", DATE, "--force", "--max-concurrency", "1")
    )
    assert done.returncode == 0, done.stderr
    assert sync_redis.lrange("log", 0, -1).count(b"start:a") == 2


# -- signals ---------------------------------------------------------------------------------------------


def wait_for_log(client: redis.Redis, entry: str, process: subprocess.Popen[str]) -> None:
    until(lambda: entry.encode() in client.lrange("log", 0, -1), f"{entry} logged", process)


@pytest.mark.parametrize(
    ("signum", "code", "target", "started"),
    [
        (signal.SIGTERM, 143, "slow_chain", "start:slow"),
        (signal.SIGINT, 130, "slow_chain", "start:slow"),
        (signal.SIGTERM, 143, "slow_sync_chain", "start:sync_started"),
    ],
    ids=["sigterm", "sigint", "sigterm-thread-body"],
)
def test_signal_cancels_and_releases_locks(
    redis_url: str, sync_redis: redis.Redis, signum: int, code: int, target: str, started: str
) -> None:
    """SIGTERM/SIGINT mid-run: tasks cancelled (a thread body asked to stop), locks released, 143/130."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiotasks",
            "run",
            f"{CHAINS}:{target}",
            "--date",
            DATE,
            "--redis-url",
            redis_url,
        ],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_log(sync_redis, started, process)
        if target == "slow_sync_chain":
            lock = f"lock:slow_sync:{DATE}"
            until(lambda: bool(sync_redis.exists(lock)), "slow_sync took its lock", process)
        assert sync_redis.keys("lock:*")
        process.send_signal(signum)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == code
    assert "Traceback" not in err
    assert sync_redis.keys("lock:*") == []


def test_signal_while_the_door_is_busy_leaves_no_lock() -> None:
    """Regression (a release the busy door had only queued was lost when the CLI's loop ended):
    SIGTERM while 301 runs hold their locks and Redis is stopped, so the door's connections all
    wait for replies and the last given-back lock stays queued; Redis resumes; no lock is left."""
    with RedisServer() as server, redis.Redis.from_url(server.url) as sync:
        process = subprocess.Popen(
            [sys.executable, "-m", "aiotasks", "run", f"{CHAINS}:wide_slow", "--date", DATE,
             "--redis-url", server.url],
            cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            until(lambda: sync.llen("log") == 300, "the 300 async tasks started", process)
            lock = f"lock:slow_thread:{DATE}"
            until(lambda: bool(sync.exists(lock)), "the thread body's run took its lock", process)
            server.pause()
            process.send_signal(signal.SIGTERM)
            # A CLI that does not wait for its door exits now, with Redis stopped; one that does
            # waits (up to its DRAIN_WAIT) for the replies Redis gives once it resumes.
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=1.0)
            server.resume()
            _, err = process.communicate(timeout=60)
        finally:
            server.resume()
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode == 143, err
        assert "Traceback" not in err
        assert sync.keys("lock:*") == []


# -- issue 7: a 300-wide chain through the CLI ------------------------------------------------------------


@pytest.mark.parametrize("target", ["wide_seed", "wide_decorated"])
def test_300_wide_chain_all_succeed(redis_url: str, sync_redis: redis.Redis, target: str) -> None:
    """300 independent tasks plus one depending on all: every task succeeds through the CLI's client."""
    done = cli(*with_redis(redis_url, "run", f"{CHAINS}:{target}", "--date", DATE, "--json"))
    assert done.returncode == 0, done.stderr[-2000:]
    tasks: dict[str, Any] = json.loads(done.stdout)["tasks"]
    assert len(tasks) == 301
    assert {result["status"] for result in tasks.values()} == {"success"}
    assert sync_redis.get("bodies") == b"301"
    assert sync_redis.keys("lock:*") == []
