"""Passwords, ACL users, TLS, and secrets kept out of logs and errors."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis

import aiotasks
from aiotasks import RedisAuthError, RedisUnavailable, Run, Settings, TaskError, task_boilerplate
from aiotasks._config import redact_url
from aiotasks._records import read_grid
from aiotasks._store import store_for
from tests.servers import TLS_REQUIRED_VARIABLE, RedisServer, TlsFiles, free_port, tls_missing
from tests.support import eventually, lock_and_marker_keys

DATE = "20261125"
SECRET = "pw-Zq81-very-secret"
#: What the library needs: its scripts, and the commands they call. Key patterns limit it to its keys.
ACL_RULES = ["~lock:*", "~success:*", "~run:*", "~runs:*", "~paused:*",  # a task's pause: read by the acquire
             "-@all", "+evalsha", "+eval", "+ping", "+del", "+get", "+set", "+exists", "+pexpire", "+pttl",
             # the run records (README, "Run records")
             "+time", "+hset", "+hget", "+hmget", "+hexists", "+hgetall", "+zadd",
             "+zremrangebyscore", "+zrevrange"]  # fmt: skip


@pytest.fixture(scope="module")
def secured() -> Iterator[RedisServer]:
    """A server with requirepass and an ACL user limited to aiotasks' keys and commands."""
    with RedisServer(password=SECRET) as server:
        with redis.Redis.from_url(server.url) as admin:
            admin.acl_setuser("worker", enabled=True, passwords=[f"+{SECRET}"], reset_keys=True, commands=[])
            admin.execute_command("ACL", "SETUSER", "worker", *ACL_RULES)
        yield server


@aiotasks.task()
async def guarded(run: Run) -> None:
    run.result["ok"] = True


def url_for(server: RedisServer, userinfo: str) -> str:
    return f"redis://{userinfo}@127.0.0.1:{server.port}/0"


async def test_right_password_works(secured: RedisServer) -> None:
    """requirepass with the right password: a task runs and records its marker."""
    client = Redis.from_url(url_for(secured, f":{SECRET}"))
    # Its own name: the module's server is shared, and another test may have run `guarded` on it.
    right_password = aiotasks.Task(guarded.__wrapped__, name="right_password")  # type: ignore[attr-defined]
    try:
        result = await right_password(DATE, redis=client)
        assert (result["status"], result["ok"]) == ("success", True)
        assert await client.get(f"success:right_password:{DATE}") is not None
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "userinfo", [":wrong", "worker:wrong", "nobody:" + SECRET], ids=["password", "acl", "user"]
)
async def test_wrong_credentials_are_a_clear_error(secured: RedisServer, userinfo: str) -> None:
    """Wrong password, ACL password or user: RedisAuthError naming the problem, never the secret."""
    client = Settings.from_url(url_for(secured, userinfo), retries=0).create_client()
    try:
        with pytest.raises(RedisAuthError) as caught:
            await task_boilerplate("t", DATE, redis=client)
    finally:
        await client.aclose()
    message = str(caught.value)
    assert "refused our credentials" in message
    assert f"127.0.0.1:{secured.port}" in message
    assert SECRET not in message
    assert SECRET not in "".join(traceback.format_exception(caught.value))
    assert "wrong" not in message.split(": ", 1)[0]


async def test_acl_user_limited_to_the_library_keys(secured: RedisServer) -> None:
    """An ACL user allowed only aiotasks' commands on lock:*/success:* can run tasks, and nothing else."""
    client = Redis.from_url(url_for(secured, f"worker:{SECRET}"))
    try:
        acl_task = aiotasks.Task(guarded.__wrapped__, name="acl_task")  # type: ignore[attr-defined]
        result = await acl_task(DATE, redis=client)
        assert result["status"] == "success"
        with pytest.raises(redis.exceptions.NoPermissionError):
            await client.set("elsewhere", 1)
    finally:
        await client.aclose()


#: README's rules for a namespace ns: the same commands, on ns's keys only.
#: How a server words a key its ACL user may not touch (a NOPERM reply): Redis 6.2 and 7.0 "no
#: permissions to access one of the keys used as arguments", Redis 8 and Valkey "No permissions
#: to access a key".
KEY_REFUSED = re.compile(r"(?i)no permissions to access (one of the keys|a key)\b")
NAMESPACED_ACL_RULES = [
    "~ns:lock:*",
    "~ns:success:*",
    "~ns:run:*",
    "~ns:runs:*",
    "~ns:paused:*",
    *ACL_RULES[5:],
]


async def test_acl_user_limited_to_a_namespace(secured: RedisServer) -> None:
    """An ACL user with README's namespaced rules (~ns:lock:* ... ~ns:paused:*) runs a chain with
    namespace ns; outside it every run is refused with RedisAuthError naming the key permission."""
    with redis.Redis.from_url(secured.url) as admin:
        admin.execute_command(
            "ACL", "SETUSER", "ns_worker", "on", f">{SECRET}", "resetkeys", *NAMESPACED_ACL_RULES
        )
        before = set(admin.keys("*"))
    client = Redis.from_url(url_for(secured, f"ns_worker:{SECRET}"))
    namespaced = aiotasks.Task(guarded.__wrapped__, name="namespaced")  # type: ignore[attr-defined]
    try:
        inside = await aiotasks.run_chain([namespaced], DATE, redis=client, namespace="ns")
        assert inside["namespaced"]["status"] == "success"
        for namespace in (None, "other"):
            outside = await aiotasks.run_chain([namespaced], DATE, redis=client, namespace=namespace)
            assert (outside["namespaced"]["status"], outside["namespaced"]["reason"]) == (
                "failed",
                "redis_unavailable",
            )
            assert KEY_REFUSED.search(outside["namespaced"]["errors"][0])
        with pytest.raises(RedisAuthError, match=KEY_REFUSED) as caught:
            await task_boilerplate("namespaced", DATE, redis=client)
        assert isinstance(caught.value.__cause__, redis.exceptions.NoPermissionError)
    finally:
        await client.aclose()
    with redis.Redis.from_url(secured.url) as admin:
        assert set(admin.keys("*")) - before == {
            f"ns:success:namespaced:{DATE}".encode(),
            f"ns:run:namespaced:{DATE}".encode(),  # the run's record and its index
            b"ns:runs:namespaced",
        }


async def test_acl_user_without_script_rights_gets_an_auth_error(secured: RedisServer) -> None:
    """Regression: a NOPERM reply (redis-py's NoPermissionError) becomes RedisAuthError, not a raw error."""
    with redis.Redis.from_url(secured.url) as admin:
        admin.execute_command("ACL", "SETUSER", "reader", "on", f">{SECRET}", "~*", "-@all", "+ping")
    client = Redis.from_url(url_for(secured, f"reader:{SECRET}"))
    try:
        with pytest.raises(TaskError) as caught:
            await guarded(DATE, redis=client)
    finally:
        await client.aclose()
    assert isinstance(caught.value.__cause__, RedisAuthError)
    assert "no permissions to run the 'evalsha' command" in str(caught.value.__cause__)


async def test_a_read_script_refused_a_key_pattern_is_an_auth_error(secured: RedisServer) -> None:
    """Regression: the grid's script builds each date's keys from prefixes; for a user without
    ~run:* the server refused one inside the script, and read_grid raised redis-py's ResponseError
    (the CLI said "Redis error"). Now RedisAuthError saying the ACL user was denied, as for a
    declared key, on every server (the refusal's text differs: 6.2 wraps it)."""
    with redis.Redis.from_url(secured.url) as admin:
        admin.execute_command(
            "ACL",
            "SETUSER",
            "no_runs",
            "on",
            f">{SECRET}",
            "resetkeys",
            "~lock:*",
            "~success:*",
            *ACL_RULES[5:],
        )
    client = Redis.from_url(url_for(secured, f"no_runs:{SECRET}"))
    try:
        with pytest.raises(RedisAuthError, match="denied our ACL user a permission") as caught:
            await read_grid(store_for(client), ["grid_task"], [DATE], namespace=None)
    finally:
        await client.aclose()
    assert isinstance(caught.value.__cause__, redis.exceptions.ResponseError)
    assert SECRET not in str(caught.value)


@pytest.fixture
def tls_build() -> None:
    """Skip where the server's build has no TLS (found by starting it with a TLS port); fail
    instead where AIOTASKS_TEST_TLS_REQUIRED says the build has it."""
    if (missing := tls_missing()) is not None:
        if os.environ.get(TLS_REQUIRED_VARIABLE):
            pytest.fail(f"{TLS_REQUIRED_VARIABLE} is set, yet {missing}")
        pytest.skip(missing)


@pytest.mark.usefixtures("tls_build")
async def test_tls_with_a_throwaway_ca() -> None:
    """rediss:// against a TLS-only redis-server, trusting a CA the test made with openssl."""
    tls = TlsFiles.make(Path(tempfile.mkdtemp(prefix="aiotasks-tls-")))
    with RedisServer(tls=tls) as server:
        assert server.url.startswith("rediss://")
        client = Settings.from_url(server.url).create_client()
        try:
            assert (await guarded(DATE, redis=client))["status"] == "success"
            assert await client.exists(f"success:guarded:{DATE}") == 1
        finally:
            await client.aclose()
        plain = Settings.from_url(
            f"redis://127.0.0.1:{server.port}/0", retries=0, socket_timeout=2
        ).create_client()
        try:
            with pytest.raises(RedisUnavailable):  # a plain-text client can't talk to it
                await task_boilerplate("t", DATE, redis=plain)
        finally:
            await plain.aclose()


@pytest.mark.usefixtures("tls_build")
async def test_tls_client_certificates(tmp_path: Path) -> None:
    """A server that requires client certificates: a rediss:// URL naming ssl_certfile/ssl_keyfile
    runs tasks; without them the run fails with RedisUnavailable naming the server."""
    tls = TlsFiles.make(tmp_path)
    # Later options win: this one overrides server_args()'s "--tls-auth-clients no".
    with RedisServer(tls=tls, args=["--tls-auth-clients", "yes"]) as server:
        with_certificate = f"{server.url}&ssl_certfile={tls.client_cert}&ssl_keyfile={tls.client_key}"
        client = Settings.from_url(with_certificate).create_client()
        try:
            assert (await guarded(DATE, redis=client))["status"] == "success"
            assert await client.get(f"success:guarded:{DATE}") is not None
        finally:
            await client.aclose()
        anonymous = Settings.from_url(server.url, retries=0).create_client()
        try:
            with pytest.raises(RedisUnavailable) as caught:
                await task_boilerplate("t", DATE, redis=anonymous)
        finally:
            await anonymous.aclose()
        # Only the server is certain to be named: TLS 1.3 refuses the client after the handshake,
        # so the client reads either the server's "certificate required" alert or a reset.
        assert f"127.0.0.1:{server.port}" in str(caught.value)


async def test_password_never_reaches_logs(secured: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    """At DEBUG, for aiotasks' and redis-py's loggers, no record (or its traceback) contains the password."""
    caplog.set_level(logging.DEBUG)
    good = Settings.from_url(url_for(secured, f":{SECRET}")).create_client()
    bad = Settings.from_url(url_for(secured, f":{SECRET}x"), retries=0).create_client()
    gone = Settings.from_url(f"redis://:{SECRET}@127.0.0.1:{free_port()}/0", retries=0).create_client()
    try:
        await aiotasks.run_chain([guarded], DATE, redis=good)
        for client in (bad, gone):
            results = await aiotasks.run_chain([guarded], DATE, redis=client)
            assert results["guarded"]["status"] == "failed"
            assert SECRET not in str(results)
            logging.getLogger("aiotasks").exception("a logged failure", exc_info=RedisUnavailable("x"))
    finally:
        for client in (good, bad, gone):
            await client.aclose()
    assert caplog.records
    for record in caplog.records:
        text = record.getMessage() + (
            logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        )
        assert SECRET not in text, record.name


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@host:6379/6", "redis://:***@host:6379/6"),
        ("redis://user:pw@host/0", "redis://user:***@host/0"),
        ("rediss://user@host", "rediss://user@host"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("redis://host/0?password=pw&db=1", "redis://host/0?password=***&db=1"),
        ("unix:///tmp/r.sock?password=pw", "unix:///tmp/r.sock?password=***"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    """redact_url hides passwords in the user-info and in query options."""
    assert redact_url(url) == shown


def test_settings_errors_never_show_the_password() -> None:
    """A malformed URL's error names it with the password redacted."""
    with pytest.raises(aiotasks.InvalidConfig) as caught:
        Settings.from_url(f"redis://:{SECRET}@host:notaport/0")
    assert SECRET not in str(caught.value)
    assert ":***@host" in str(caught.value)


async def test_namespaces_keep_applications_apart(redis_url: str, redis_client: Redis) -> None:
    """Two namespaces on one Redis: the same task and date run once in each, under prefixed keys."""
    for namespace in ("app1", "app2"):
        results = await aiotasks.run_chain([guarded], DATE, redis=redis_client, namespace=namespace)
        assert results["guarded"]["status"] == "success"
    keys = await lock_and_marker_keys(redis_client)
    assert keys == [f"app1:success:guarded:{DATE}".encode(), f"app2:success:guarded:{DATE}".encode()]


async def test_an_acl_user_without_the_cancel_keys_still_renews(secured: RedisServer) -> None:
    """Regression: the renewal reads the run's cancel-request key, which the documented rules
    (no ~cancel:*) do not grant; that must not fail the renewals (and lose every long run's
    lock). The lease renews without it (such runs can't be cancelled) and the run succeeds."""
    client = Redis.from_url(url_for(secured, f"worker:{SECRET}"))
    renewed = asyncio.Event()

    async def long(run: Run) -> None:
        # Two renewals (every 0.5 s): the TTL falls below 1250 ms, then rises above it, twice.
        for _ in range(2):
            for below in (True, False):

                async def crossed(below: bool = below) -> bool:
                    return (int(await run.redis.pttl(run.lock_key)) < 1250) is below

                await eventually(crossed, "the lease renewed")
        renewed.set()

    try:
        result = await asyncio.wait_for(
            aiotasks.Task(long, name="acl_long", lock_timeout=1.5)(DATE, redis=client), 20
        )
        assert result["status"] == "success"
        assert renewed.is_set()
    finally:
        await client.aclose()
