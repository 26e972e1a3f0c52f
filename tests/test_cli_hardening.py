"""``python -m aiotasks`` at its edges (issue 12): exit codes and hints for what the user wrote and what
the server said, backfill bounds, signals, the terminal (live view, reset's prompt), and the settings
that must take effect. Every test runs the real CLI in a subprocess against real ``redis-server``s."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from aiotasks._chain import Chain, State, prepare_run
from aiotasks._cli import _parser
from aiotasks._views import live_frame, plan_mermaid
from tests.chains.cli_chains import logged
from tests.servers import LocalCluster, RedisServer, free_port
from tests.support import PATIENCE, until
from tests.test_cli import (
    CHAINS,
    DATE,
    ROOT,
    assert_one_error_line,
    child_env,
    cli,
    with_redis,
)


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "aiotasks", *args],
        cwd=ROOT,
        env=env if env is not None else child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextlib.contextmanager
def killed_at_exit(process: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


class Terminal:
    """The CLI on a pseudo-terminal (stdin, stdout and stderr), as an operator runs it."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aiotasks", *args],
            cwd=ROOT,
            env=env if env is not None else child_env(),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)
        self.output = b""

    def read_until(self, wanted: bytes | None) -> bytes:
        """Read until ``wanted`` appears (None: until the CLI closes the terminal); bounded by PATIENCE."""
        deadline = time.monotonic() + PATIENCE
        while wanted is None or wanted not in self.output:
            left = deadline - time.monotonic()
            assert left > 0, f"waited for {wanted!r}; got {self.output!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every copy of the terminal's other end is closed
                chunk = b""
            if not chunk:
                assert wanted is None, f"the CLI ended before {wanted!r}: {self.output!r}"
                break
            self.output += chunk
        return self.output

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def finish(self) -> tuple[int, str]:
        """Wait for the CLI to exit; its exit code and everything it wrote."""
        try:
            self.read_until(None)
            return self.process.wait(PATIENCE), self.output.decode(errors="replace")
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            os.close(self.master)


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


# -- item 8: what the user wrote is exit 2, what the server said exit 3, one line, a hint --------------------


def test_a_database_the_server_does_not_have_exits_2(redis_server: RedisServer) -> None:
    """Regression: /99 on a server with 16 databases printed a ResponseError traceback (exit 1)."""
    url = f"redis://127.0.0.1:{redis_server.port}/99"
    done = cli("run", f"{CHAINS}:chain", "--date", DATE, "--redis-url", url)
    assert_one_error_line(done, 2, "no such database", "databases")


@pytest.fixture
def not_redis() -> Iterator[int]:
    """A local TCP server that answers the first request of every connection with an HTTP error.

    It reads the request first and closes only after the client has (or after a bound), so
    the client always reads the garbage rather than racing a closed socket.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                connection, _ = listener.accept()
                with connection:
                    connection.settimeout(10)
                    connection.recv(65536)
                    connection.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                    while connection.recv(65536):  # until the client closes its end
                        pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() above
        listener.close()
        thread.join(10)


def test_something_other_than_redis_exits_3(not_redis: int) -> None:
    """Regression: a port where something else answers gave an InvalidResponse traceback ("Protocol
    error"); now exit 3, one line saying it is not the Redis protocol."""
    done = cli("run", f"{CHAINS}:chain", "--redis-url", f"redis://127.0.0.1:{not_redis}/0")
    assert_one_error_line(done, 3, "not the Redis protocol", f"127.0.0.1:{not_redis}")


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("?foo=bar", ["unknown option 'foo'", "socket_timeout"]),
        ("?protocol=9", ["protocol", "2 or 3"]),
        ("?socket_timeout=soon", ["socket_timeout", "'soon'"]),
        ("?ssl_ca_certs=/ca.pem", ["rediss://"]),
    ],
    ids=["unknown", "protocol", "not-a-number", "tls-option-without-tls"],
)
def test_url_options_redis_py_would_choke_on_exit_2(
    redis_url: str, sync_redis: redis.Redis, query: str, named: list[str]
) -> None:
    """Regression: ?foo=bar gave a TypeError traceback and ?protocol=9 exit 3; options are now checked
    against what redis-py takes, before any client exists: exit 2, nothing sent."""
    before = sync_redis.info("commandstats")
    done = cli("run", f"{CHAINS}:chain", "--redis-url", redis_url + query)
    assert_one_error_line(done, 2, *named)
    after = sync_redis.info("commandstats")
    assert {k for k in after if after[k] != before.get(k)} <= {"cmdstat_info"}


def test_cluster_with_a_database_exits_2(redis_url: str) -> None:
    """Regression: --cluster (or AIOTASKS_REDIS_CLUSTER=1) with a URL naming database 6 printed a
    RedisClusterException traceback; now exit 2 saying a cluster has only database 0."""
    url = redis_url.rsplit("/", 1)[0] + "/6"
    for done in (
        cli("run", f"{CHAINS}:chain", "--cluster", "--redis-url", url),
        cli("run", f"{CHAINS}:chain", env=child_env(AIOTASKS_REDIS_URL=url, AIOTASKS_REDIS_CLUSTER="1")),
    ):
        assert_one_error_line(done, 2, "only database 0", "database 6")


def test_cluster_flag_on_a_plain_server_exits_2(redis_url: str) -> None:
    """--cluster against a server that is not a cluster node: exit 2 saying to drop --cluster."""
    done = cli("run", f"{CHAINS}:chain", "--cluster", "--redis-url", redis_url)
    assert_one_error_line(done, 2, "not a cluster node", "drop --cluster")


def test_wrongtype_in_status_exits_3_naming_the_task(redis_url: str, sync_redis: redis.Redis) -> None:
    """Regression: status meeting a lock key of another type printed a WRONGTYPE traceback; now exit
    3 naming the task and its keys, with the hint to use a namespace."""
    sync_redis.rpush(f"lock:b:{DATE}", "someone else's list")
    done = cli(*with_redis(redis_url, "status", f"{CHAINS}:chain", "--date", DATE))
    assert_one_error_line(done, 3, "'b'", f"lock:b:{DATE}", "--namespace")


def test_a_cluster_node_without_cluster_flag_exits_2(cluster: LocalCluster) -> None:
    """Regression: a cluster node used as a plain server failed every task with CROSSSLOT/MOVED; now
    exit 2 before any task runs, saying to add --cluster."""
    done = cli("run", f"{CHAINS}:chain", "--date", DATE, "--redis-url", cluster.url, "--json")
    assert_one_error_line(done, 2, "Redis Cluster", "add --cluster")
    assert done.stdout == ""


def test_aiotasks_redis_cluster_takes_effect(cluster: LocalCluster) -> None:
    """AIOTASKS_REDIS_CLUSTER=1: the tasks get a cluster client and hash-tagged keys, and succeed."""
    env = child_env(AIOTASKS_REDIS_URL=cluster.url, AIOTASKS_REDIS_CLUSTER="1")
    done = cli("run", f"{CHAINS}:probe_chain", "--date", DATE, "--json", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["tasks"]["probe"]
    assert (result["status"], result["cluster"], result["key"]) == ("success", True, f"lock:{{probe}}:{DATE}")


def docs_acl_rules(user: str) -> list[str]:
    """The ACL rules for ``user`` in the docs' Redis how-to, as an operator would paste them."""
    line = next(
        line.strip()
        for line in (ROOT / "docs" / "how-to" / "redis.md").read_text().splitlines()
        if line.strip().startswith(f"ACL SETUSER {user} ")
    )
    return line.split()[3:]


def test_docs_acl_line_works_on_database_6_and_a_missing_permission_is_named() -> None:
    """Regression: README's ACL line lacked +select, so a run on db 6 was told "refused our
    credentials"; it also lacked +zscore (history, metrics) and +mget (status, since task pauses).
    The documented line (now in docs/how-to/redis.md) runs, and reads status, history and metrics, on
    db 6; without +select the error names the permission."""
    with RedisServer() as server, redis.Redis.from_url(server.url) as admin:
        rules = docs_acl_rules("worker")
        admin.execute_command("ACL", "SETUSER", "worker", "reset", *rules)
        admin.execute_command("ACL", "SETUSER", "noselect", "reset", *rules, "-select")
        good = f"redis://worker:password@127.0.0.1:{server.port}/6"
        for command in ("run", "status", "history", "metrics"):
            dated = ["--date", DATE] if command in ("run", "status") else []
            done = cli(command, f"{CHAINS}:probe_chain", *dated, "--redis-url", good)
            assert done.returncode == 0, (command, done.stdout + done.stderr)
        bad = f"redis://noselect:password@127.0.0.1:{server.port}/6"
        line = assert_one_error_line(
            cli("run", f"{CHAINS}:chain", "--redis-url", bad), 3, "'select'", "+select"
        )
        assert "refused our credentials" not in line


@pytest.mark.timeout(60)
def test_docs_scheduler_acl_line_serves_a_trigger_and_the_controls_on_database_6() -> None:
    """The documented ACL line for serve, trigger and the controls (docs/how-to/redis.md) is enough: a
    replica served as that user takes a trigger and runs the chain; pause, resume and clear succeed as
    that user; and Redis logged no denied command."""
    with RedisServer() as server, redis.Redis.from_url(server.url) as admin:
        admin.execute_command("ACL", "SETUSER", "scheduler", "reset", *docs_acl_rules("scheduler"))
        url = f"redis://scheduler:password@127.0.0.1:{server.port}/6"
        replica = subprocess.Popen(
            [sys.executable, "-m", "aiotasks", "serve", f"{CHAINS}:probe_schedules", "--redis-url", url],
            cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            until(lambda: int(admin.info("clients")["blocked_clients"]) == 1, "the replica listens", replica)
            done = cli("trigger", f"{CHAINS}:probe_schedules", "--schedule", "probe", "--key", DATE,
                       "--wait", "--redis-url", url)  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            assert "1 succeeded" in done.stdout
            for control in (
                ["pause", f"{CHAINS}:probe_chain", "--task", "probe"],
                ["resume", f"{CHAINS}:probe_chain", "--task", "probe"],
                ["pause", f"{CHAINS}:probe_schedules", "--schedule", "probe"],
                ["resume", f"{CHAINS}:probe_schedules", "--schedule", "probe"],
                ["clear", f"{CHAINS}:probe_chain", "--date", DATE, "--yes"],
                ["status", f"{CHAINS}:probe_schedules"],
                ["history", f"{CHAINS}:probe_schedules"],
            ):
                controlled = cli(*control, "--redis-url", url)
                assert controlled.returncode == 0, (control, controlled.stdout + controlled.stderr)
        finally:
            replica.send_signal(signal.SIGTERM)
            _, errors = replica.communicate(timeout=20)
        assert "Traceback" not in errors, errors
        # redis-py names itself on connect (CLIENT SETINFO) and ignores a refusal: not a command of ours.
        denied = [entry for entry in admin.acl_log() if not str(entry["object"]).startswith("client")]
        assert denied == []


def test_rediss_is_named_rediss() -> None:
    """Regression: errors about a rediss:// server named it redis://, hiding that TLS was in use."""
    port = free_port()
    done = cli("run", f"{CHAINS}:chain", "--redis-url", f"rediss://127.0.0.1:{port}/0")
    assert_one_error_line(done, 3, f"rediss://127.0.0.1:{port}/0")


def test_a_missing_tls_file_is_named(tmp_path: Path) -> None:
    """Regression: a missing CA file was reported as "No such file or directory" (exit 3) without
    naming it; now exit 2 naming the option and the path."""
    missing = tmp_path / "nowhere" / "ca.pem"
    done = cli(
        "run", f"{CHAINS}:chain", "--redis-url", f"rediss://127.0.0.1:{free_port()}/0?ssl_ca_certs={missing}"
    )
    assert_one_error_line(done, 2, f"ssl_ca_certs={missing}", "does not exist")


# -- item 10: backfill bounds --------------------------------------------------------------------------------


def test_a_backfill_longer_than_max_dates_is_refused_before_anything_runs(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    """Regression: --from 10000101 --to 99991231 started 3.3 million dates (266 MB before the first
    task). Over --max-dates (default 3,660) it is exit 2 before any command; --max-dates N allows it."""
    before = sync_redis.info("commandstats")
    done = cli(*with_redis(redis_url, "run", f"{CHAINS}:chain", "--from", "10000101", "--to", "99991231"))
    assert_one_error_line(done, 2, "3,287,182 dates", "--max-dates 3,660", "--max-dates 3287182")
    short = ("run", f"{CHAINS}:chain", "--from", "20261124", "--to", "20261126")
    assert_one_error_line(cli(*with_redis(redis_url, *short, "--max-dates", "2")), 2, "--max-dates 3")
    after = sync_redis.info("commandstats")
    assert {k for k in after if after[k] != before.get(k)} <= {"cmdstat_info"}
    allowed = cli(*with_redis(redis_url, *short, "--max-dates", "3", "--json"))
    assert allowed.returncode == 0, allowed.stderr
    assert len(json.loads(allowed.stdout)["runs"]) == 3


def test_a_backfill_across_year_1000_runs_every_date(redis_url: str) -> None:
    """Regression: a range before year 1000 made 7-digit dates ('invalid date 9991231', exit 2)."""
    done = cli(
        *with_redis(redis_url, "run", f"{CHAINS}:chain", "--from", "09991231", "--to", "10000101", "--json")
    )
    assert done.returncode == 0, done.stderr
    assert [run["date"] for run in json.loads(done.stdout)["runs"]] == ["09991231", "10000101"]


# -- smaller items -------------------------------------------------------------------------------------------


def test_summary_says_already_done_for_completed_tasks(redis_url: str) -> None:
    """Regression: a rerun's summary read "0 success, 3 completed" (as if completed were another kind of
    success); it now says "0 succeeded, 3 already done"."""
    args = with_redis(redis_url, "run", f"{CHAINS}:chain", "--date", DATE)
    assert cli(*args).stdout.startswith(f"{DATE}: 3 tasks: 3 succeeded, 0 already done,")
    assert cli(*args).stdout.startswith(f"{DATE}: 3 tasks: 0 succeeded, 3 already done,")


def test_status_shows_a_recurring_task_as_recurring(redis_url: str) -> None:
    """Regression: status showed a recurring task (which never writes a marker) as pending forever;
    now its last run for the date (from its record), or ``recurring`` when it has none."""
    assert cli(*with_redis(redis_url, "run", f"{CHAINS}:with_recurring", "--date", DATE)).returncode == 0
    states = {}
    for date in (DATE, "20261126"):
        done = cli(*with_redis(redis_url, "status", f"{CHAINS}:with_recurring", "--date", date, "--json"))
        assert done.returncode == 0, done.stderr
        states[date] = {row["task"]: row["state"] for row in json.loads(done.stdout)["tasks"]}
    assert states == {
        DATE: {"a": "completed", "tick": "completed"},
        "20261126": {"a": "pending", "tick": "recurring"},
    }


@pytest.mark.parametrize("command", ["run", "status"])
def test_an_empty_chain_with_redis_gives_no_traceback(redis_url: str, command: str) -> None:
    """The pre-run check reads one task's keys; an empty chain has none, and must not crash on that."""
    done = cli(*with_redis(redis_url, command, f"{CHAINS}:empty", "--date", DATE))
    assert done.returncode in (0, 2), done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_sigint_with_json_prints_the_partial_document(redis_url: str, sync_redis: redis.Redis) -> None:
    """Regression: SIGINT during run --json printed nothing. Now: exit 130 and one document with what
    finished (quick), the running task cancelled (failed), the one never started cancelled (skipped)."""
    with killed_at_exit(
        spawn(*with_redis(redis_url, "run", f"{CHAINS}:partly_slow", "--date", DATE, "--json"))
    ) as process:
        until(lambda: b"start:slow_after" in sync_redis.lrange("log", 0, -1), "slow_after started", process)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=PATIENCE)
    assert process.returncode == 130, err
    document = json.loads(out)
    assert document["exit_code"] == 130
    tasks = document["tasks"]
    assert tasks["quick"]["status"] == "success"
    assert (tasks["slow_after"]["status"], tasks["slow_after"]["reason"]) == ("failed", "cancelled")
    assert (tasks["last"]["status"], tasks["last"]["reason"]) == ("skipped", "cancelled")
    assert sync_redis.keys("lock:*") == []


def test_mermaid_gives_every_task_its_own_node() -> None:
    """Regression: a.b, a_b and a-b became one Mermaid node, and a task named `end` broke the chart."""
    chain = Chain([logged("a.b"), logged("a_b"), logged("a-b"), logged("end", depends_on=("a.b", "a-b"))])
    lines = plan_mermaid(chain).splitlines()
    declared = [re.fullmatch(r'\s+(n\d+)\["(.+)"\]', line) for line in lines if "[" in line]
    nodes = {match.group(2): match.group(1) for match in declared if match}
    assert len(nodes) == len(declared)
    assert sorted(nodes) == ["a-b", "a.b", "a_b", "end"]
    assert len(set(nodes.values())) == 4
    edges = {line.strip() for line in lines if "-->" in line}
    assert edges == {f"{nodes['a.b']} --> {nodes['end']}", f"{nodes['a-b']} --> {nodes['end']}"}
    assert not any(line.strip().startswith(("end", "a.b", "a_b", "a-b")) for line in lines)


def test_a_target_that_calls_asyncio_run_at_import_works(tmp_path: Path) -> None:
    """Regression: a target module calling asyncio.run() at import failed inside the CLI's running
    loop; targets are now imported before the loop starts."""
    target = tmp_path / "setup_at_import.py"
    target.write_text(
        "import asyncio\n"
        "from tests.chains.cli_chains import logged\n"
        "async def prepare() -> str:\n"
        "    return 'ready'\n"
        "STATE = asyncio.run(prepare())\n"
        "chain = [logged('x')]\n"
    )
    done = cli("run", f"{target}:chain", "--date", DATE)
    assert done.returncode == 0, done.stderr
    assert "1 succeeded" in done.stdout


def test_without_fakeredis_the_cli_does_not_announce_the_in_process_store(tmp_path: Path) -> None:
    """Regression: without fakeredis the CLI first said it used the in-process store, then that it
    needed fakeredis. Now one line: exit 2 saying how to install it or configure a Redis."""
    blocker = tmp_path / "fakeredis"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('fakeredis is not installed (test)')\n")
    env = child_env(PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    done = cli("run", f"{CHAINS}:chain", "--date", DATE, env=env)
    line = assert_one_error_line(done, 2, "fakeredis", "AIOTASKS_REDIS_URL")
    assert "using an in-process store" not in line


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "0", "-1", "soon"])
def test_socket_timeout_must_be_a_positive_finite_number(value: str) -> None:
    """Regression: AIOTASKS_SOCKET_TIMEOUT=inf was accepted (a stalled Redis would hang the run)."""
    done = cli("run", f"{CHAINS}:chain", env=child_env(AIOTASKS_SOCKET_TIMEOUT=value))
    assert_one_error_line(done, 2, "AIOTASKS_SOCKET_TIMEOUT" if value == "soon" else "socket_timeout")


@pytest.mark.parametrize("command", ["run", "status"])
def test_a_bad_retention_is_refused_before_anything_runs(command: str) -> None:
    """Regression: AIOTASKS_RETENTION=abc let `run` start and fail every task with InvalidConfig."""
    done = cli(command, f"{CHAINS}:chain", env=child_env(AIOTASKS_RETENTION="abc"))
    assert_one_error_line(done, 2, "AIOTASKS_RETENTION", "'abc'")


def test_an_empty_namespace_option_is_refused(redis_url: str, sync_redis: redis.Redis) -> None:
    """Regression: --namespace= was silently ignored (keys went to the default namespace)."""
    done = cli(*with_redis(redis_url, "run", f"{CHAINS}:chain", "--date", DATE, "--namespace="))
    assert_one_error_line(done, 2, "namespace ''")
    assert sync_redis.keys("*") == []


def test_namespace_option_takes_effect(redis_url: str, sync_redis: redis.Redis) -> None:
    """--namespace app: markers under app:success:..., status sees them only with the same namespace."""
    assert (
        cli(*with_redis(redis_url, "run", f"{CHAINS}:chain", "--date", DATE, "--namespace", "app")).returncode
        == 0
    )
    keys = [k for k in sync_redis.keys("*") if isinstance(k, bytes)]
    assert sorted(k for k in keys if not k.startswith((b"app:run:", b"app:runs:"))) == sorted(
        [b"log", *(f"app:success:{t}:{DATE}".encode() for t in "abc")]
    )
    rows = {
        namespace: {
            row["task"]: row["state"]
            for row in json.loads(
                cli(
                    *with_redis(redis_url, "status", f"{CHAINS}:chain", "--date", DATE, "--json", *extra)
                ).stdout
            )["tasks"]
        }
        for namespace, extra in (("app", ("--namespace", "app")), ("none", ()))
    }
    assert rows == {"app": dict.fromkeys("abc", "completed"), "none": dict.fromkeys("abc", "pending")}


def test_socket_and_pool_timeouts_from_the_environment_take_effect(redis_url: str) -> None:
    """AIOTASKS_SOCKET_TIMEOUT and AIOTASKS_POOL_TIMEOUT reach the client the tasks are given."""
    env = child_env(AIOTASKS_REDIS_URL=redis_url, AIOTASKS_SOCKET_TIMEOUT="2.5", AIOTASKS_POOL_TIMEOUT="7")
    done = cli("run", f"{CHAINS}:probe_chain", "--date", DATE, "--json", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["tasks"]["probe"]
    assert (result["socket_timeout"], result["pool_timeout"]) == (2.5, 7.0)
    defaults = json.loads(
        cli(
            "run",
            f"{CHAINS}:probe_chain",
            "--date",
            DATE,
            "--json",
            "--force",
            env=child_env(AIOTASKS_REDIS_URL=redis_url),
        ).stdout
    )
    assert (defaults["tasks"]["probe"]["socket_timeout"], defaults["tasks"]["probe"]["pool_timeout"]) == (
        5.0,
        20.0,
    )


def test_a_stalled_redis_fails_within_the_socket_timeout_from_the_environment() -> None:
    """A frozen server (SIGSTOP) with AIOTASKS_SOCKET_TIMEOUT set: exit 3 saying it timed out, no hang."""
    with RedisServer() as server:
        server.pause()
        try:
            env = child_env(AIOTASKS_REDIS_URL=server.url, AIOTASKS_SOCKET_TIMEOUT="0.2")
            done = cli("run", f"{CHAINS}:chain", "--date", DATE, env=env)
        finally:
            server.resume()
    assert_one_error_line(done, 3, "unavailable")
    assert "imeout" in done.stderr


# -- signals and Redis failing mid-run -----------------------------------------------------------------------


def test_a_second_signal_exits_at_once(redis_url: str, sync_redis: redis.Redis) -> None:
    """The first SIGTERM asks a thread body to stop; one that ignores it is left behind by a second
    signal: exit 143 at once, its lock kept (until its TTL), as documented."""
    with killed_at_exit(
        spawn(*with_redis(redis_url, "run", f"{CHAINS}:stubborn_chain", "--date", DATE))
    ) as process:
        until(lambda: bool(sync_redis.exists(f"lock:stubborn:{DATE}")), "stubborn took its lock", process)
        process.send_signal(signal.SIGTERM)
        assert process.stderr is not None
        assert "SIGTERM received" in process.stderr.readline()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=PATIENCE)
    assert process.returncode == 143, err
    assert "second signal: exiting now" in err
    assert sync_redis.exists(f"lock:stubborn:{DATE}") == 1


def test_redis_failing_mid_run_exits_3() -> None:
    """Redis stopped while a task runs: its finish can't be recorded, the task fails with
    redis_unavailable, and the CLI exits 3 (not 1: the fault is Redis, not the task)."""
    with RedisServer() as server, redis.Redis.from_url(server.url) as watcher:
        process = spawn("run", f"{CHAINS}:redis_dies", "--date", DATE, "--json", "--redis-url", server.url)
        with killed_at_exit(process):
            started = b"start:outlives_redis"
            until(lambda: started in watcher.lrange("log", 0, -1), "the task started", process)
            server.stop()
            out, err = process.communicate(timeout=PATIENCE)
    assert process.returncode == 3, out + err
    result = json.loads(out)["tasks"]["outlives_redis"]
    assert (result["status"], result["reason"]) == ("failed", "redis_unavailable")


# -- the terminal: live view and reset's prompt --------------------------------------------------------------


async def test_live_frame_shows_each_task_and_what_it_waits_for(fake_redis: Redis) -> None:
    """The live view's lines: a header of counts, then each task's mark, name, elapsed time and state;
    on a short terminal only the running and waiting tasks, and how many more there are."""
    chain = Chain([logged("done"), logged("busy"), logged("queued"), logged("held")])
    run = prepare_run(chain, DATE, redis=fake_redis)
    now = 1000.0
    done, busy, held = run.progress["done"], run.progress["busy"], run.progress["held"]
    done.state, done.started, done.finished = State.SUCCESS, now - 3, now - 1
    done.result = {"status": "success", "reason": None}
    busy.state, busy.started = State.RUNNING, now - 2.5
    held.state, held.started, held.holder, held.holder_ttl_ms = State.WAITING, now - 4, "abcd1234", 12_000
    frame = live_frame(run, rows=24, now=now)
    assert frame[0] == f"{DATE}: 1 pending, 1 running, 1 waiting, 1 success, 0 skipped, 0 failed"
    assert frame[1:] == [
        "  + done        2.0s  success",
        "  > busy        2.5s  running",
        "    queued            pending",
        "  ~ held        4.0s  waiting (held by abcd1234, TTL 12s)",
    ]
    short = live_frame(run, rows=3, now=now)
    assert short == [frame[0], "  > busy      2.5s  running", "  ... and 1 more running or waiting"]


def test_run_on_a_terminal_draws_the_live_view_then_the_summary(redis_url: str) -> None:
    """On a terminal, run draws the live frame (header of counts, one line per task), erases it, and
    prints the summary; without a terminal (every other test) it prints only the summary."""
    terminal = Terminal(*with_redis(redis_url, "run", f"{CHAINS}:chain", "--date", DATE))
    code, output = terminal.finish()
    assert code == 0, output
    frame = re.search(
        rf"{DATE}: \d pending, \d running, \d waiting, \d success, \d skipped, \d failed\r\n"
        r"(  [ >~+\-!] [abc] .*\r\n){3}",
        output,
    )
    assert frame, output
    erase = output.index("\x1b[4F\x1b[J", frame.end())
    assert output.index(f"{DATE}: 3 tasks: 3 succeeded", erase) > erase


@pytest.fixture
def marked(redis_url: str, sync_redis: redis.Redis) -> str:
    """The session server with the chain run once for DATE (three success markers)."""
    assert cli(*with_redis(redis_url, "run", f"{CHAINS}:chain", "--date", DATE)).returncode == 0
    assert len(sync_redis.keys("success:*")) == 3
    return redis_url


@pytest.mark.parametrize(("answer", "removed"), [("y", 3), ("n", 0), ("", 0)], ids=["yes", "no", "default"])
def test_reset_asks_on_a_terminal(marked: str, sync_redis: redis.Redis, answer: str, removed: int) -> None:
    """Without --yes on a terminal, reset names the markers and asks [y/N]: y removes them, anything
    else (Enter included) removes nothing; both exit 0."""
    terminal = Terminal(*with_redis(marked, "reset", f"{CHAINS}:chain", "--date", DATE))
    prompt = terminal.read_until(b"[y/N] ").decode()
    assert f"Remove the success markers of a, b, c for {DATE}?" in prompt
    terminal.type(answer + "\n")
    code, output = terminal.finish()
    assert code == 0, output
    assert len(sync_redis.keys("success:*")) == 3 - removed


def test_ctrl_c_at_resets_prompt_exits_130_removing_nothing(marked: str, sync_redis: redis.Redis) -> None:
    """Regression: Ctrl-C at reset's prompt did not exit (the prompt ran in a thread the loop waited
    for). Now the event loop itself waits for the line: exit 130 at once, nothing removed, even when
    the signal comes the instant the prompt appears (a blocking input() would miss it then)."""
    terminal = Terminal(*with_redis(marked, "reset", f"{CHAINS}:chain", "--date", DATE))
    terminal.read_until(b"[y/N] ")
    terminal.process.send_signal(signal.SIGINT)  # what the terminal sends its foreground process on Ctrl-C
    code, output = terminal.finish()
    assert code == 130, output
    assert "nothing removed" in output
    assert len(sync_redis.keys("success:*")) == 3


# -- issue 19 item 6: every count option is bounded, refused before anything is sent ----------------------

SCHEDULES = "tests/chains/sched_chains.py:schedules"
#: (command and target, option, lowest, highest) for every int option of the CLI.
COUNT_OPTIONS = [
    (("run", f"{CHAINS}:chain"), "--max-dates", 1, 3_652_059),
    (("status", f"{CHAINS}:chain"), "--max-dates", 1, 3_652_059),
    (("run", f"{CHAINS}:chain"), "--max-concurrency", 1, 100_000),
    (("run", f"{CHAINS}:chain"), "--window", 1, 100_000),
    (("serve", SCHEDULES), "--max-concurrency", 1, 100_000),
    (("serve", SCHEDULES), "--window", 1, 100_000),
    (("history", f"{CHAINS}:chain"), "--last", 1, 100_000),
    (("metrics", f"{CHAINS}:chain"), "--serve", 0, 65535),
]


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        pytest.param(command, option, value, id=f"{command[0]}{option}={value}")
        for command, option, low, high in COUNT_OPTIONS
        for value in (str(low - 1), str(high + 1))
    ]
    + [pytest.param(("history", f"{CHAINS}:chain"), "--last", "9" * 20, id="history--last=huge")],
)
def test_an_out_of_range_count_exits_2_before_anything_is_sent(
    redis_url: str, sync_redis: redis.Redis, command: tuple[str, str], option: str, value: str
) -> None:
    """Regression: history --last 99999999999999999999 reached Redis and exited 3 with a script error.
    Every int option out of its range is one line naming it, exit 2, and no connection reaches Redis."""
    before = sync_redis.info("stats")["total_connections_received"]
    done = cli(*with_redis(redis_url, *command, option, value))
    line = assert_one_error_line(done, 2, f"argument {option}: must be from", f"not {value}")
    assert "Traceback" not in line
    assert sync_redis.info("stats")["total_connections_received"] == before


@pytest.mark.parametrize(("command", "option", "low", "high"), COUNT_OPTIONS, ids=lambda v: str(v))
def test_every_count_option_takes_both_of_its_bounds(
    command: tuple[str, str], option: str, low: int, high: int
) -> None:
    """The lowest and highest value of each count option parse (the bounds are inclusive)."""
    for value in (low, high):
        args = _parser().parse_args([*command, option, str(value)])
        assert getattr(args, option.lstrip("-").replace("-", "_")) == value


def test_a_count_that_is_not_a_whole_number_exits_2_naming_it() -> None:
    """--window 1.5 and a 5000-digit --last are one line naming the option (no int() traceback)."""
    done = cli("run", f"{CHAINS}:chain", "--window", "1.5")
    assert_one_error_line(done, 2, "argument --window: not a whole number: '1.5'")
    done = cli("history", f"{CHAINS}:chain", "--last", "9" * 5000)
    assert len(assert_one_error_line(done, 2, "argument --last: not a whole number")) < 200
