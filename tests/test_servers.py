"""The supported servers (issue 19, item 5): what differs between them is handled, and the suite's
server is selectable.

The suite as a whole runs on each server CI installs (docs/reference/servers.md); these tests pin,
on any server, the two things that make that possible: Redis 6.2's wrapped script errors read as
Redis 7's, and ``AIOTASKS_TEST_REDIS_SERVER`` picking the binary.
"""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis import exceptions as rex
from redis.asyncio import Redis

from aiotasks import RedisAuthError, RedisUnavailable
from aiotasks._wire import translate
from tests.servers import SERVER_VARIABLE, redis_server_binary

#: Redis 6.2.14's replies (redis-py strips the leading "ERR ") to a script whose command failed.
SHA = "f_2b58b113dac432e64a65f3ae35a5bac7217348a6"
WRAPPED_WRONGTYPE = (
    f"Error running script (call to {SHA}): @user_script:1: "
    "WRONGTYPE Operation against a key holding the wrong kind of value"
)
WRAPPED_READONLY = (
    f"Error running script (call to {SHA}): @user_script:1: @user_script: 1: "
    "-READONLY You can't write against a read only replica."
)
WRAPPED_OOM = (
    f"Error running script (call to {SHA}): @user_script:1: @user_script: 1: "
    "-OOM command not allowed when used memory > 'maxmemory'."
)
#: Not a command's error code: a script touching an undeclared key it may not (ERR on every server).
WRAPPED_ACL = (
    f"Error running script (call to {SHA}): @user_script:1: @user_script: 1: "
    "The user executing the script can't access at least one of the keys mentioned in the command arguments"
)


@pytest.fixture
async def client() -> AsyncIterator[Redis]:
    """A client that is never connected: translate() only names its server."""
    unused = Redis.from_url("redis://127.0.0.1:7/0")
    yield unused
    await unused.aclose()


async def test_wrapped_wrongtype_reads_as_wrongtype(client: Redis) -> None:
    """Regression (Redis 6.2: status on a lock key of another type printed no task name, exit 3
    without the hint): a WRONGTYPE wrapped in a script error starts with WRONGTYPE, as on Redis 7."""
    translated = translate(rex.ResponseError(WRAPPED_WRONGTYPE), client)
    assert type(translated) is rex.ResponseError
    assert str(translated) == "WRONGTYPE Operation against a key holding the wrong kind of value"


async def test_wrapped_readonly_is_a_read_only_replica(client: Redis) -> None:
    """Regression (Redis 6.2: a run on a replica failed with a raw script error): a wrapped READONLY
    is RedisUnavailable saying the server is a read-only replica, caused by redis-py's ReadOnlyError."""
    translated = translate(rex.ResponseError(WRAPPED_READONLY), client)
    assert isinstance(translated, RedisUnavailable)
    assert "127.0.0.1:7/0 is a read-only replica: READONLY You can't write" in str(translated)
    assert isinstance(translated.__cause__, rex.ResponseError)


async def test_wrapped_errors_of_other_codes_keep_their_class(client: Redis) -> None:
    """A wrapped OOM becomes redis-py's OutOfMemoryError; any other error stays as it was."""
    oom = translate(rex.ResponseError(WRAPPED_OOM), client)
    assert type(oom) is rex.OutOfMemoryError
    assert str(oom).startswith("OOM command not allowed")
    unchanged = rex.ResponseError("WRONGTYPE Operation against a key")
    assert translate(unchanged, client) is unchanged
    # Redis 7's form of a NOPERM is already the ACL error it is.
    assert isinstance(
        translate(rex.NoPermissionError("No permissions to access a key"), client), RedisAuthError
    )


@pytest.mark.parametrize(
    "text",
    [
        WRAPPED_ACL,  # Redis 6.2
        WRAPPED_ACL.rpartition("1: ")[2],  # Redis 7.0
        "ACL failure in script: No permissions to access a key script: on @user_script:20.",  # 8, Valkey
    ],
)
async def test_an_acl_refusal_inside_a_script_is_an_acl_error(client: Redis, text: str) -> None:
    """Regression: a read script touching a key outside the user's patterns (GRID and RUNS build
    some keys from prefixes) raised redis-py's ResponseError from the library, and the CLI said
    "Redis error". Wrapped (Redis 6.2) or bare (7.0+, Valkey): RedisAuthError naming the refusal."""
    translated = translate(rex.ResponseError(text), client)
    assert isinstance(translated, RedisAuthError)
    assert "denied our ACL user a permission: " in str(translated)
    assert text.rpartition("1: ")[2].split(" script: on ")[0] in str(translated)


def test_server_binary_is_selectable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """AIOTASKS_TEST_REDIS_SERVER picks the server: a directory holding valkey-server, a binary's path;
    a path with no server fails loudly, naming the variable."""
    valkey = tmp_path / "valkey-server"
    valkey.write_text("#!/bin/sh\n")
    valkey.chmod(valkey.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv(SERVER_VARIABLE, str(tmp_path))
    assert redis_server_binary() == str(valkey)
    monkeypatch.setenv(SERVER_VARIABLE, str(valkey))
    assert redis_server_binary() == str(valkey)
    monkeypatch.setenv(SERVER_VARIABLE, str(tmp_path / "nowhere"))
    with pytest.raises(RuntimeError, match=SERVER_VARIABLE):
        redis_server_binary()
