"""A throwaway PostgreSQL cluster for the tests: installed if missing, started once, removed after.

``Cluster.start()`` finds PostgreSQL's server programs (installing Debian's ``postgresql`` package
with apt-get when they are missing and we are root, as in CI), runs ``initdb`` in a temporary
directory owned by the ``postgres`` system user (PostgreSQL refuses to run as root), starts the
server on 127.0.0.1 on a free port with its unix socket in that directory, and gives each test a
fresh database. ``Cluster.stop()`` stops the server and removes the directory.

The superuser has a random password, so the store URLs the tests use carry one (and the tests
can check that it never appears in output).

By hand, for a scratch store:  .venv/bin/python tests/pg.py   (prints a URL; Ctrl+C removes it)
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["Cluster", "ClusterUnavailable", "find_bindir", "install_postgresql"]

SERVER_USER = "postgres"


class ClusterUnavailable(RuntimeError):
    """PostgreSQL could not be installed or started here; the message says why."""


def find_bindir() -> Path | None:
    """The newest installed PostgreSQL server's bin directory (Debian layout, else PATH)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def install_postgresql(log=print) -> Path:
    """Install Debian's ``postgresql`` package (root only) without creating or starting its main cluster."""
    if os.geteuid() != 0:
        raise ClusterUnavailable("PostgreSQL is not installed and installing it needs root "
                                 "(sudo apt-get install postgresql)")
    if not shutil.which("apt-get"):
        raise ClusterUnavailable("PostgreSQL is not installed and there is no apt-get to install it")
    # The package would otherwise create and start a 'main' cluster on port 5432 that nothing here
    # uses. A drop-in (createcluster.conf includes createcluster.d/) leaves the package's own file alone.
    dropin = Path("/etc/postgresql-common/createcluster.d/outcomes-engine-tests.conf")
    if not dropin.exists():
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text("# written by the outcomes-engine tests (tests/pg.py): clusters are made on demand\n"
                          "create_main_cluster = false\n")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log("installing PostgreSQL (apt-get install postgresql) for the test suite...")
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise ClusterUnavailable(f"`{' '.join(command)}` failed ({done.returncode}):\n"
                                     f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    bindir = find_bindir()
    if bindir is None:
        raise ClusterUnavailable("apt-get installed postgresql but no initdb was found")
    return bindir


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """One PostgreSQL server in a temporary directory, for one test session."""

    def __init__(self, bindir: Path | None = None, *, log=print):
        self.bindir = bindir
        self.log = log
        self.root: Path | None = None
        self.port: int | None = None
        self.password = secrets.token_urlsafe(12)
        self.user = "postgres"
        self._names = itertools.count(1)
        self._running = False

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Cluster:
        self.bindir = self.bindir or find_bindir() or install_postgresql(self.log)
        as_root = os.geteuid() == 0
        if as_root:
            try:
                owner = pwd.getpwnam(SERVER_USER)
            except KeyError as exc:
                raise ClusterUnavailable(f"running as root but there is no '{SERVER_USER}' user to run "
                                         "PostgreSQL as") from exc
        self.root = Path(tempfile.mkdtemp(prefix="outcomes-pg-"))
        try:
            (self.root / "pwfile").write_text(self.password + "\n")
            if as_root:
                for path in (self.root, self.root / "pwfile"):
                    os.chown(path, owner.pw_uid, owner.pw_gid)
            self._run("initdb", "-D", str(self.root / "data"), "-U", self.user, f"--pwfile={self.root / 'pwfile'}",
                      "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync")
            (self.root / "pwfile").unlink()
            for attempt in range(5):
                self.port = _free_port()
                # Throwaway data: durability off for speed. Connections come over TCP on 127.0.0.1
                # with a password, as in production; the socket stays inside the temporary directory.
                options = " ".join([
                    "-c listen_addresses=127.0.0.1", f"-c port={self.port}",
                    f"-c unix_socket_directories={self.root}", "-c fsync=off", "-c synchronous_commit=off",
                    "-c full_page_writes=off", "-c max_connections=200", "-c shared_buffers=64MB",
                    "-c timezone=UTC", "-c log_min_messages=warning",
                ])
                started = self._run("pg_ctl", "-D", str(self.root / "data"), "-l", str(self.root / "server.log"),
                                    "-w", "-t", "60", "-o", options, "start", check=False)
                if started.returncode == 0:
                    self._running = True
                    break
                if attempt == 4:
                    log = (self.root / "server.log").read_text() if (self.root / "server.log").exists() else ""
                    raise ClusterUnavailable(f"pg_ctl start failed:\n{started.stdout}{started.stderr}\n{log[-3000:]}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.root is None:
            return
        if self._running:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop", check=False)
            self._running = False
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bindir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.root or "/")
        if check and done.returncode != 0:
            raise ClusterUnavailable(f"{program} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done

    # -- databases ------------------------------------------------------------------------------

    def url(self, database: str = "postgres", *, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _admin(self):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                               dbname="postgres", autocommit=True)

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its SQLAlchemy URL (with the password)."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY file_copy')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    with Cluster() as cluster:
        url = cluster.create_database("scratch")
        print(f"OUTCOMES_DATABASE_URL='{url}'", flush=True)
        print("PostgreSQL is running; Ctrl+C stops it and removes every file.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
