"""Real ``redis-server`` processes that tests and benchmarks start and stop themselves.

Each server gets a free loopback port and a private temporary directory; it is
never the machine's own Redis (port 6379), and nothing here flushes a database
it did not create.

Which server: ``redis-server`` on PATH, or the one ``AIOTASKS_TEST_REDIS_SERVER``
names (a binary, or a directory holding ``redis-server`` or ``valkey-server``),
so the same suite runs on every server docs/reference/servers.md supports. No
client binary (``redis-cli``) is needed: the cluster is made with plain commands.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import redis

__all__ = [
    "SERVER_VARIABLE",
    "TLS_REQUIRED_VARIABLE",
    "LocalCluster",
    "RedisServer",
    "Sentinel",
    "ServerExited",
    "ServerVersion",
    "TlsFiles",
    "free_port",
    "redis_server_binary",
    "server_version",
    "tls_missing",
]

STARTUP_TIMEOUT = 15.0
#: Names the server binary the tests start: a path, a name on PATH, or a directory holding one of
#: :data:`SERVER_NAMES`. Unset: ``redis-server`` on PATH.
SERVER_VARIABLE: Final = "AIOTASKS_TEST_REDIS_SERVER"
SERVER_NAMES: Final = ("redis-server", "valkey-server")
#: Set (to anything) where the server is known to have TLS: a TLS test then fails rather than skip
#: (CI sets it for Debian's redis-server, so a broken probe can't hide the TLS tests).
TLS_REQUIRED_VARIABLE: Final = "AIOTASKS_TEST_TLS_REQUIRED"
#: A cluster node's bus listens on its port plus this, on every server (``--cluster-port``, which
#: moves it, came in Redis 7.0).
CLUSTER_BUS_OFFSET: Final = 10_000
CLUSTER_SLOTS: Final = 16_384
#: What starts each line of a server's log: "2068:M 06 Dec 2026 03:46:52.915 # ".
_LOG_PREFIX: Final = re.compile(r"^\d+:[A-Z] \d+ \w+ \d+ [\d:.]+ . ")


def redis_server_binary() -> str:
    """Path of the server binary the tests start; the test run fails loudly if there is none.

    ``AIOTASKS_TEST_REDIS_SERVER`` picks it (see :data:`SERVER_VARIABLE`), else ``redis-server``
    on PATH.
    """
    chosen = os.environ.get(SERVER_VARIABLE, "")
    if not chosen:
        found = shutil.which("redis-server")
        if found is None:
            raise RuntimeError(
                f"redis-server is not installed (CI installs Debian's redis-server) and {SERVER_VARIABLE} "
                "names no other server"
            )
        return found
    candidates = [str(Path(chosen) / name) for name in SERVER_NAMES] if Path(chosen).is_dir() else [chosen]
    for candidate in candidates:
        if found := shutil.which(candidate):
            return found
    raise RuntimeError(
        f"{SERVER_VARIABLE}={chosen}: no executable server there (a server binary, a name on PATH, "
        f"or a directory holding {' or '.join(SERVER_NAMES)})"
    )


@dataclass(frozen=True)
class ServerVersion:
    """What the server binary says it is, from ``--version`` ("Valkey server v=8.1.8 ...")."""

    #: ``Redis`` or ``Valkey``, as the binary spells it.
    name: str
    number: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.name} {'.'.join(map(str, self.number))}"


@functools.cache
def server_version() -> ServerVersion:
    """The version of :func:`redis_server_binary`, asked once per run."""
    said = subprocess.run(
        [redis_server_binary(), "--version"], capture_output=True, text=True, check=True
    ).stdout
    found = re.match(r"(\w+) server v=(\d+(?:\.\d+)*)", said)
    if found is None:
        raise RuntimeError(f"{redis_server_binary()} --version said {said!r}, not '<name> server v=X.Y.Z'")
    return ServerVersion(found[1], tuple(int(part) for part in found[2].split(".")))


class ServerExited(RuntimeError):
    """The server process exited while starting (a bad option, a port taken, no TLS in its build...).

    :ivar said: its last words: the last two lines it wrote on stderr or to its log.
    """

    def __init__(self, message: str, said: str) -> None:
        super().__init__(message)
        self.said = said


@functools.cache
def tls_missing() -> str | None:
    """Why the server can't be tested over TLS, or None when it can.

    Found by trying, once per run: a server started with a TLS port and a throwaway CA's
    certificate. A build without TLS refuses to start (Redis 6.2 does not know ``tls-port``;
    Valkey and Redis 8 find no TLS connection type), and its own words become the reason, so a
    TLS test skips only where the build has no TLS, whatever the server is called.
    """
    directory = Path(tempfile.mkdtemp(prefix="aiotasks-tls-probe-"))
    try:
        with RedisServer(tls=TlsFiles.make(directory)):
            return None
    except ServerExited as exc:
        server = f"{server_version()} ({redis_server_binary()})"
        return f"{server} has no TLS: with --tls-port it said {exc.said!r}"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_ports(count: int) -> list[int]:
    """``count`` ports that were free a moment ago, each with its cluster bus port (+10000) free too.

    Below Linux's ephemeral range (32768 and up), bus ports included, so no outgoing connection
    takes one meanwhile; none is another's bus port.
    """
    taken: set[int] = set()
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(15_000, 32_768 - CLUSTER_BUS_OFFSET)
        pair = {port, port + CLUSTER_BUS_OFFSET}
        if not pair & taken and all(_free(p) for p in pair):
            ports.append(port)
            taken |= pair
    return ports


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
                lines = [
                    _LOG_PREFIX.sub("", line)
                    for line in f"{err.decode()}\n{self.log()}".splitlines()
                    if line.strip()
                ]
                raise ServerExited(
                    f"{self.command()[0]} exited at start: {err.decode()} {self.log()}",
                    " / ".join(lines[-2:]),
                )
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
    """A Redis Cluster of three masters on loopback.

    Made with the commands ``redis-cli --cluster create`` sends (``CLUSTER ADDSLOTS``,
    ``SET-CONFIG-EPOCH``, ``MEET``), through redis-py: no client binary is needed, and the same
    steps work on every server in the supported range.
    """

    def __init__(self, masters: int = 3) -> None:
        self.nodes = [
            RedisServer(
                ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", "5000"],
                port=port,
            )
            for port in cluster_ports(masters)
        ]  # fmt: skip

    def start(self) -> LocalCluster:
        try:
            for node in self.nodes:
                node.start()
            with contextlib.ExitStack() as stack:
                admins = [stack.enter_context(redis.Redis.from_url(node.url)) for node in self.nodes]
                count = len(admins)
                for index, admin in enumerate(admins):
                    first, end = index * CLUSTER_SLOTS // count, (index + 1) * CLUSTER_SLOTS // count
                    admin.execute_command("CLUSTER", "ADDSLOTS", *range(first, end))
                    # Distinct epochs before the nodes meet, as redis-cli sets them: no collision to resolve.
                    admin.execute_command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
                for node in self.nodes[1:]:
                    admins[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
                deadline = time.monotonic() + STARTUP_TIMEOUT
                while not all(self._ok(admin, count) for admin in admins):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the cluster did not become ready")
                    time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _ok(admin: redis.Redis, count: int) -> bool:
        """The node sees every slot served and every node: what a client's first CLUSTER SLOTS needs."""
        info = admin.cluster("INFO")  # parsed into a dict of strings by every redis-py we support
        return bool(info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == count)

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
