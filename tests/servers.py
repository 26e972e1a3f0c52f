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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LocalCluster", "RedisServer", "Sentinel", "TlsFiles", "free_port", "redis_server_binary"]

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
    tls: TlsFiles | None = None
    #: Also listen on a unix socket, :attr:`socket_path` in the server's directory.
    unix_socket: bool = False

    def command(self) -> list[str]:
        port_args = (
            ["--port", "0", "--tls-port", str(self.port), *self.tls.server_args()]
            if self.tls
            else ["--port", str(self.port)]
        )
        auth = ["--requirepass", self.password] if self.password else []
        unix = ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"] if self.unix_socket else []
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
            *unix,
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
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.ca}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def socket_path(self) -> Path:
        """Where the unix socket is, when the server was started with ``unix_socket=True``."""
        return self.directory / "redis.sock"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def asleep(self) -> bool:
        """The server's main thread is in a sleep system call (``DEBUG SLEEP``), not waiting for clients.

        Read from ``/proc/<pid>/wchan`` (Linux): an observable, where a PING that goes unanswered
        for a while would only be a guess.
        """
        return "nanosleep" in Path(f"/proc/{self.pid}/wchan").read_text()

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

    def halt(self) -> None:
        """Stop the process but keep its directory (and any AOF in it), to :meth:`restart` later."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            self.process.wait(10)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()

    def restart(self) -> None:
        """Start a new process on the same port and directory (keeping data only if it was persisted)."""
        self.halt()
        self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway certificate authority and a server certificate for 127.0.0.1, made with openssl."""

    ca: Path
    cert: Path
    key: Path
    #: A client certificate the CA signed, for servers started with ``--tls-auth-clients yes``.
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, directory: Path) -> TlsFiles:
        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

        openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=aiotasks-test-ca",
        )
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        )
        (directory / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", "server.crt", "-days", "2", "-extfile", "san.cnf")  # fmt: skip
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out", "client.csr",
                "-subj", "/CN=aiotasks-test-client")  # fmt: skip
        openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", "client.crt", "-days", "2")  # fmt: skip
        return cls(
            directory / "ca.crt",
            directory / "server.crt",
            directory / "server.key",
            directory / "client.crt",
            directory / "client.key",
        )

    def server_args(self) -> list[str]:
        """TLS on, clients not asked for a certificate (add ``--tls-auth-clients yes`` to ask)."""
        return ["--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key),
                "--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "no"]  # fmt: skip


class LocalCluster:
    """A Redis Cluster of three masters on loopback, made with ``redis-cli --cluster create``."""

    def __init__(self, masters: int = 3) -> None:
        self.nodes = [
            RedisServer(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                    "--cluster-port",
                    str(free_port()),
                ]
            )
            for _ in range(masters)
        ]

    def start(self) -> LocalCluster:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            subprocess.run(
                ["redis-cli", "--cluster", "create", *addresses, "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=60,
            )
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while not all(self._ok(node) for node in self.nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster did not become ready")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _ok(node: RedisServer) -> bool:
        info = subprocess.run(
            ["redis-cli", "-p", str(node.port), "cluster", "info"], capture_output=True, text=True
        )
        return "cluster_state:ok" in info.stdout

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Sentinel:
    """One sentinel watching ``master`` under the name ``mymaster``."""

    def __init__(self, master: RedisServer) -> None:
        self.master = master
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="aiotasks-sentinel-"))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Sentinel:
        config = self.directory / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"sentinel monitor mymaster 127.0.0.1 {self.master.port} 1\n"
        )
        log = str(self.directory / "sentinel.log")
        self.process = subprocess.Popen(
            [redis_server_binary(), str(config), "--sentinel", "--logfile", log],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2) as sock,
            ):
                sock.sendall(b"SENTINEL get-master-addr-by-name mymaster\r\n")
                if str(self.master.port).encode() in sock.recv(256):
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the sentinel did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Sentinel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
