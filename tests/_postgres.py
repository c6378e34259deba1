"""A real PostgreSQL server for the tests: initdb into a temp dir, a free loopback port, stopped at exit.

Started once per test process (``server()``), as an unprivileged user when we
run as root (initdb refuses root). Each test gets a fresh database from
``fresh_database_url()``. Skips, saying why, only where the binaries or the
driver are missing; ``.ci/run`` installs both, so CI never skips.
"""
from __future__ import annotations

import atexit
import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import uuid
from typing import List, Optional, Tuple

_BIN_GLOB = "/usr/lib/postgresql/*/bin"
HAVE_ASYNCPG = importlib.util.find_spec("asyncpg") is not None


def bin_dir() -> Optional[str]:
    found = sorted(glob.glob(_BIN_GLOB), key=lambda path: int(path.split("/")[-2]) if path.split("/")[-2].isdigit() else 0)
    found = [path for path in found if os.path.exists(os.path.join(path, "initdb"))]
    return found[-1] if found else (os.path.dirname(shutil.which("initdb") or "") or None)


def skip_reason() -> Optional[str]:
    if bin_dir() is None:
        return ("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): "
                "apt-get install postgresql (.ci/run does)")
    if not HAVE_ASYNCPG:
        return "the asyncpg driver is missing: pip install -e '.[postgres]'"
    return None


needs_postgres = unittest.skipIf(skip_reason() is not None, skip_reason() or "")


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class Server:
    """One postgres process over a fresh data directory; ``stop()`` is safe twice."""

    def __init__(self, listen: List[str], *, trust: List[str]) -> None:
        self.bin = bin_dir() or ""
        self.listen = listen
        self.root = tempfile.mkdtemp(prefix="taos-pg-")
        self.data = os.path.join(self.root, "data")
        self.port = _free_port()
        self.user: Optional[str] = None
        self.proc: "Optional[subprocess.Popen[bytes]]" = None
        self._trust = trust

    def _as_user(self) -> Tuple[Optional[int], Optional[int], Optional[List[int]]]:
        """(uid, gid, groups) to run the server as: an unprivileged user when we are root."""
        if os.getuid() != 0:
            return None, None, None
        entry = pwd.getpwnam("postgres") if _has_user("postgres") else pwd.getpwnam("nobody")
        self.user = entry.pw_name
        os.chown(self.root, entry.pw_uid, entry.pw_gid)
        return entry.pw_uid, entry.pw_gid, []

    def start(self) -> "Server":
        uid, gid, groups = self._as_user()
        subprocess.run([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "postgres", "-A", "trust",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True, cwd=self.root,
                       user=uid, group=gid, extra_groups=groups)
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as hba:
            for net in self._trust:
                hba.write(f"host all all {net} trust\n")
        self.proc = subprocess.Popen(
            [os.path.join(self.bin, "postgres"), "-D", self.data, "-p", str(self.port), "-k", self.root,
             "-c", f"listen_addresses={','.join(self.listen)}", "-c", "fsync=off", "-c", "max_connections=300",
             "-c", "shared_buffers=32MB"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.root, "log"), "w"), cwd=self.root,
            user=uid, group=gid, extra_groups=groups)
        self._wait_ready()
        atexit.register(self.stop)
        return self

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {open(os.path.join(self.root, 'log')).read()}")
            try:
                socket.create_connection((self.listen[0], self.port), timeout=1).close()
                if subprocess.run([os.path.join(self.bin, "pg_isready"), "-h", self.listen[0], "-p",
                                   str(self.port)], capture_output=True).returncode == 0:
                    return
            except OSError:
                pass
            time.sleep(0.1)  # polling a condition with a deadline, not synchronizing by sleep
        raise RuntimeError("postgres did not accept connections within 60 s")

    def url(self, database: str = "postgres", host: Optional[str] = None) -> str:
        return f"postgresql://postgres@{host or self.listen[0]}:{self.port}/{database}"

    def create_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        subprocess.run([os.path.join(self.bin, "psql"), "-h", self.listen[0], "-p", str(self.port), "-U", "postgres",
                        "-d", "postgres", "-q", "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
        return name

    def psql(self, database: str, sql: str) -> str:
        done = subprocess.run([os.path.join(self.bin, "psql"), "-h", self.listen[0], "-p", str(self.port), "-U",
                               "postgres", "-d", database, "-qAt", "-c", sql], check=True, capture_output=True,
                              text=True)
        return done.stdout.strip()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # "fast" shutdown: ends the sessions tests left open
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


_server: Optional[Server] = None


def server() -> Server:
    """The test process's loopback server, started on first use."""
    global _server
    if _server is None:
        _server = Server(["127.0.0.1"], trust=["127.0.0.1/32"]).start()
    return _server


def fresh_database_url() -> str:
    """A new empty database on the shared server, as a URL."""
    srv = server()
    return srv.url(srv.create_database())


class CuttableProxy:
    """A loopback TCP proxy to the server whose link can be cut like a network partition.

    ``cut()``: the server's side of every connection is closed (as the server's
    keepalive would do to a silent peer) while the client's side is kept open
    and silent, new connections included (a blackhole, as a dead link looks).
    ``heal()``: new connections go through again.
    """

    def __init__(self, port: int) -> None:
        import threading
        self.target = ("127.0.0.1", port)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.is_cut = False
        self._upstreams: List[socket.socket] = []
        self._held: List[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _accept(self) -> None:
        import threading
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.is_cut:
                self._held.append(client)  # kept open, never answered: a blackhole
                continue
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._upstreams.append(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                if not self.is_cut:
                    _quiet_close(dst)
                return
            if self.is_cut:
                continue
            try:
                dst.sendall(data)
            except OSError:
                return

    def cut(self) -> None:
        self.is_cut = True
        with self._lock:
            upstreams, self._upstreams = self._upstreams, []
        for upstream in upstreams:
            _quiet_close(upstream)

    def heal(self) -> None:
        self.is_cut = False

    def close(self) -> None:
        _quiet_close(self.listener)
        self.cut()


def _quiet_close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
