"""Real ``redis-server`` processes that tests and benchmarks start and stop themselves.

Each server gets a free loopback port and a private temporary directory; it is
never the machine's own Redis (port 6379), and nothing here flushes a database
it did not create.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RedisServer", "free_port", "redis_server_binary"]

STARTUP_TIMEOUT = 15.0


def redis_server_binary() -> str:
    """Path of ``redis-server``; the test run fails loudly if it is missing."""
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("redis-server is not installed (CI installs Debian's redis-server)")
    return found


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    """One ``redis-server`` child process.

    :ivar port: the port it listens on (plain TCP, or TLS when ``tls_port`` is used).
    """

    args: Sequence[str] = ()
    password: str | None = None
    port: int = field(default_factory=free_port)
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="aiotasks-redis-")))
    process: subprocess.Popen[bytes] | None = None
    tls: bool = False

    def command(self) -> list[str]:
        port_args = ["--port", "0", "--tls-port", str(self.port)] if self.tls else ["--port", str(self.port)]
        auth = ["--requirepass", self.password] if self.password else []
        return [
            redis_server_binary(),
            *port_args,
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
            "--protected-mode", "no",
            *auth,
            *self.args,
        ]  # fmt: skip

    def start(self) -> RedisServer:
        """Start the server and wait until it accepts connections."""
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                _, err = self.process.communicate()
                raise RuntimeError(f"redis-server exited at start: {err.decode()} {self.log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                if self._ready():
                    return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not start: {self.log()}")

    def _ready(self) -> bool:
        if self.tls:
            return True  # the TLS port accepting connections is enough
        with socket.create_connection(("127.0.0.1", self.port), 1.0) as sock:
            if self.password:
                sock.sendall(f"AUTH {self.password}\r\n".encode())
                sock.recv(64)
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
        return b"PONG" in reply

    def log(self) -> str:
        try:
            return (self.directory / "redis.log").read_text()[-2000:]
        except OSError:
            return ""

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:port/0``."""
        auth = f":{self.password}@" if self.password else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it keeps its sockets but answers nothing."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze a paused server (SIGCONT)."""
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its directory."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def restart(self) -> None:
        """Stop the process and start a new one on the same port (data is not kept)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
            if self.process.stderr is not None:
                self.process.stderr.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running(*args: str, password: str | None = None) -> Iterator[RedisServer]:
    """Start a server for the duration of a ``with`` block."""
    with RedisServer(args, password=password) as server:
        yield server
