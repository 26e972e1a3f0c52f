"""Serving the console with uvicorn for ``aiotasks web`` (the CLI owns the signals and exit codes)."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

__all__ = ["ConsoleServer", "listen"]


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handlers: the CLI's first signal calls ``stop``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free one).

    Bound here, before serving, so that a port in use is an ``OSError`` the CLI
    reports in one line (uvicorn would log it and exit the process).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class ConsoleServer:
    """The console app served on one socket until :meth:`stop`.

    :param access_log: log each request at INFO on ``uvicorn.access`` (paths and
        query strings only: the token never travels in a URL).
    """

    def __init__(self, app: Any, sock: socket.socket, *, access_log: bool) -> None:
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            log_level=logging.INFO if access_log else logging.WARNING,
            access_log=access_log,
            server_header=False,
            proxy_headers=False,
        )
        self._server = _Server(config)
        self._sock = sock

    def stop(self) -> None:
        """Stop accepting, finish the requests in flight, return from :meth:`serve`."""
        self._server.should_exit = True

    async def serve(self) -> None:
        await self._server.serve(sockets=[self._sock])
