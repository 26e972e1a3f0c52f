"""No part of a Redis password in any message, exception attribute or CLI output (issue 12, item 7).

A password may hold any character; generated ones often hold ``/``, ``+``, ``=``,
``#``, ``?`` or ``@``. Before the fix a ``/`` in the password printed the whole
URL, and ``#`` or ``?`` printed a prefix of the password as the "port".
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import string
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiotasks import InvalidConfig, RedisAuthError, Settings
from aiotasks._cli import main
from aiotasks._config import redact_url
from aiotasks._store import store_for
from tests.servers import RedisServer
from tests.test_cli import assert_one_error_line, child_env, cli

SERVER_PASSWORD = "the-servers-own-password-0932"
CHAIN = str(Path(__file__).resolve().parent / "chains" / "cli_chains.py") + ":chain"
#: Characters that end the user-info for urllib and redis-py, or mean something in a URL.
RESERVED = "/?#@:%&=+[]; \t"
PASSWORDS = st.text(
    st.one_of(
        st.sampled_from(RESERVED),
        st.sampled_from(string.printable),
        st.characters(blacklist_categories=("Cs", "Cc")),
    ),
    min_size=3,
    max_size=24,
)


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    """A server whose password is none of the generated ones: every URL that parses fails AUTH."""
    with RedisServer(password=SERVER_PASSWORD) as started:
        yield started


@pytest.fixture
def keep_cli_logging() -> Iterator[None]:
    """main() configures the aiotasks logger, as a program does; put it back for the other tests."""
    logger = logging.getLogger("aiotasks")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        yield
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


def url_with(password: str, port: int) -> str:
    return f"redis://:{password}@127.0.0.1:{port}/0"


async def texts_for(url: str) -> list[str]:
    """Every text a user can see for ``url``: the error and its attributes, or the failed connection's."""
    try:
        configured = Settings.from_url(url, retries=0)
    except InvalidConfig as exc:
        return [str(exc), repr(exc), repr(exc.value), repr(exc.args)]
    client = configured.create_client()
    try:
        await store_for(client).ping()
    except RedisAuthError as exc:
        return [str(exc), repr(exc), exc.server, configured.redacted_url]
    finally:
        await client.aclose()
    raise AssertionError("a generated password was accepted")


def cli_texts(url: str) -> list[str]:
    """stdout and stderr of the CLI (in this process, at -vv), given ``url`` by option and by variable."""
    texts = []
    for argv, env in (
        (["status", CHAIN, "-vv", "--redis-url", url], {}),
        (["run", CHAIN, "-vv", "--json"], {"AIOTASKS_REDIS_URL": url}),
    ):
        out, err = io.StringIO(), io.StringIO()
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            mock.patch.dict(os.environ, env),
        ):
            code = main(argv)
        assert code in (2, 3), (code, err.getvalue())
        texts += [out.getvalue(), err.getvalue()]
    return texts


def leaks(password: str, texts: list[str], vocabulary: str) -> list[str]:
    """Substrings of 3+ characters of ``password`` found in ``texts`` (and not in the fixed wording)."""
    joined = "\n".join(texts)
    return sorted(
        {
            password[i:j]
            for i in range(len(password))
            for j in range(i + 3, len(password) + 1)
            if password[i:j] in joined and password[i:j] not in vocabulary
        }
    )


@pytest.fixture(scope="module")
def vocabulary(server: RedisServer) -> str:
    """What the messages say whatever the password: the texts for passwords of each kind, made of 'Q'."""
    texts: list[str] = []
    logger = logging.getLogger("aiotasks")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        for password in ("QQQ", "Q/Q", "Q@Q", "Q[Q"):
            url = url_with(password, server.port)
            texts += [redact_url(url), *asyncio.run(texts_for(url)), *cli_texts(url)]
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
    return "\n".join(texts)


PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@settings(PROPERTY, max_examples=200)
@given(password=PASSWORDS)
def test_no_part_of_any_password_in_errors(server: RedisServer, vocabulary: str, password: str) -> None:
    """Any password, whatever its characters: no 3-character piece of it in the error of a URL
    refused as malformed (message, .value) or of the failed login (message, .server), or a redacted URL."""
    url = url_with(password, server.port)
    texts = [redact_url(url), *asyncio.run(texts_for(url))]
    assert not leaks(password, texts, vocabulary), texts


@settings(PROPERTY, max_examples=12)
@given(password=PASSWORDS)
def test_no_part_of_any_password_in_cli_output(
    server: RedisServer, vocabulary: str, keep_cli_logging: None, password: str
) -> None:
    """Any password: no 3-character piece of it in the CLI's stdout or stderr (at -vv), whether the
    URL comes from --redis-url or AIOTASKS_REDIS_URL (fewer examples: each is two CLI runs)."""
    texts = cli_texts(url_with(password, server.port))
    assert not leaks(password, texts, vocabulary), texts


@pytest.mark.parametrize(
    "password",
    ["k3J/9xQ+TopSecret=", "k3J#9xQ+TopSecret=", "k3J?9xQ+TopSecret=", "k3J@9x/Q+TopSecret="],
    ids=["slash", "hash", "question", "at-then-slash"],
)
def test_a_password_with_a_reserved_character_is_refused_unseen(password: str) -> None:
    """Regression: with '/' in the password the CLI printed the whole URL, with '#' or '?' the part
    before it (as the "port"). Now: exit 2, one line saying to percent-encode, no piece of it shown."""
    url = f"redis://:{password}@127.0.0.1:6/6"
    by_option = cli("run", "tests/chains/cli_chains.py:chain", "--redis-url", url)
    by_variable = cli("run", "tests/chains/cli_chains.py:chain", env=child_env(AIOTASKS_REDIS_URL=url))
    for done in (by_option, by_variable):
        line = assert_one_error_line(done, 2, "percent-encode")
        for piece in ("k3J", "TopSecret", "9xQ"):
            assert piece not in done.stdout + done.stderr, line
    with pytest.raises(InvalidConfig) as caught:
        Settings.from_url(url)
    assert "k3J" not in str(caught.value) + repr(caught.value.value)


def test_the_same_password_percent_encoded_works() -> None:
    """The hint is right: the password percent-encoded authenticates, and is not shown either."""
    password = "k3J/9xQ+TopSecret=?#@"
    encoded = "k3J%2F9xQ%2BTopSecret%3D%3F%23%40"
    with RedisServer(password=password) as started:
        url = f"redis://:{encoded}@127.0.0.1:{started.port}/0"
        done = cli("run", "tests/chains/cli_chains.py:chain", "--json", "-vv", "--redis-url", url)
    assert done.returncode == 0, done.stderr
    for piece in ("k3J", "TopSecret", "9xQ", "%2F9x"):
        assert piece not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:k3J/9xQ+TopSecret=@host:6379/6", "redis://:***@host:6379/6"),
        ("redis://user:k3J#9x?Q@host/0", "redis://user:***@host/0"),
        ("redis://:p@ss@host/0", "redis://:***@host/0"),
        ("redis://host/0?password=a&b&db=2", "redis://host/0?password=***&db=2"),
        ("rediss://host/0?ssl_password=k3J#x&ssl_ca_certs=/ca.pem", "rediss://host/0?ssl_password=***&ssl_ca_certs=/ca.pem"),
        ("k3J:pw@host", "k3J:***@host"),
    ],
)  # fmt: skip
def test_redact_url_finds_the_user_info_by_the_last_at(url: str, shown: str) -> None:
    """The user-info runs to the last '@', whatever '/', '?', '#' or '@' the password holds."""
    assert redact_url(url) == shown
