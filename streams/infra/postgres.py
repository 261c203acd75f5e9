"""A project-owned Postgres cluster from the system's PostgreSQL server binaries.

The cluster lives in ``$LEADFLOW_HOME/postgres`` and listens on 127.0.0.1 only.
Postgres refuses to run as root, so when leadflow runs as root the cluster is
owned by and run as the ``postgres`` OS user (which Debian's package creates),
through ``runuser``. If that user cannot reach the project folder (a checkout
under a private home directory), the data folder moves to
``/var/lib/leadflow/<hash>`` and ``$LEADFLOW_HOME/postgres/LOCATION`` says so.

Authentication is ``trust`` on loopback: this is a development cluster.
Point ``LEADFLOW_DATABASE_URL`` at a real server for anything else.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from streams.errors import InfraError, PortInUseError, ServiceStartError, ToolMissingError
from streams.infra.process import ServiceStatus, port_open, tail
from streams.settings import Settings

if TYPE_CHECKING:
    from psycopg import sql

__all__ = ["APP_ROLE", "OWNER_ROLE", "LocalPostgres", "find_bindir"]

#: Owns the schema and runs migrations.
OWNER_ROLE = "leadflow"
#: Least-privilege role for the sinks: reads and writes rows, no DDL.
APP_ROLE = "leadflow_app"
_PG_USER = "postgres"


def find_bindir(configured: str = "") -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres`` (newest version)."""
    if configured:
        path = Path(configured)
        return path if (path / "pg_ctl").exists() else None
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).resolve().parent if pg_ctl else None


class LocalPostgres:
    """Install (if allowed), init, start, stop and report the project's cluster."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.home_dir / "postgres"
        self.is_root = os.geteuid() == 0

    # --- paths -----------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        """The cluster's data folder (see module docstring for the root case)."""
        pointer = self.dir / "LOCATION"
        if pointer.exists():
            return Path(pointer.read_text().strip())
        return self.dir / "data"

    @property
    def log_file(self) -> Path:
        """Server log."""
        return self.data_dir.parent / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        """Unix socket folder (kept short and private to the cluster)."""
        return self.data_dir.parent / "run"

    @property
    def address(self) -> str:
        """host:port the cluster listens on."""
        return f"127.0.0.1:{self.settings.pg_port}"

    # --- lifecycle -------------------------------------------------------------
    def status(self) -> ServiceStatus:
        """Whether our cluster runs."""
        if self.settings.uses_external_database:
            return ServiceStatus(
                "postgres",
                _can_connect(self.settings.database_url),
                _redact(self.settings.database_url),
                "external (LEADFLOW_DATABASE_URL)",
                managed=False,
            )
        pid = self._pid()
        detail = f"data {self.data_dir}, logs {self.log_file}"
        return ServiceStatus("postgres", pid is not None, self.address, detail, pid)

    def up(self) -> str:
        """Start the cluster unless it runs; create roles and database. Returns what was done."""
        if self.settings.uses_external_database:
            if not _can_connect(self.settings.database_url):
                where = _redact(self.settings.database_url)
                raise ServiceStartError(f"cannot connect to LEADFLOW_DATABASE_URL ({where})")
            return "using external Postgres (LEADFLOW_DATABASE_URL); started nothing"
        if self._pid() is not None:
            self._ensure_database()
            return f"Postgres already running at {self.address} (pid {self._pid()}); reusing it"
        if port_open(self.settings.pg_port):
            raise PortInUseError(
                f"port {self.settings.pg_port} is already in use by another program, so the "
                "local Postgres cannot start; set LEADFLOW_PG_PORT to a free port, or "
                "LEADFLOW_DATABASE_URL to use that server instead"
            )
        bindir = self._bindir()
        initialised = self._init(bindir)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._chown(self.socket_dir)
        opts = (
            f"-p {self.settings.pg_port} -c listen_addresses=127.0.0.1 "
            f"-k {self.socket_dir} -c shared_buffers=64MB -c max_connections=200"
        )
        proc = self._run(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        if proc.returncode != 0:
            raise ServiceStartError(
                f"Postgres did not start (pg_ctl exit {proc.returncode}). "
                f"Last log lines ({self.log_file}):\n{tail(self.log_file) or proc.stdout}"
            )
        self._ensure_database()
        how = "initialised and " if initialised else ""
        return f"Postgres {how}started at {self.address} (logs {self.log_file})"

    def down(self) -> str:
        """Stop the cluster (fast shutdown)."""
        if self.settings.uses_external_database:
            return "external Postgres configured; nothing to stop"
        pid = self._pid()
        if pid is None:
            return "Postgres was not running"
        bindir = self._bindir(install=False)
        proc = self._run(
            [str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"]
        )
        if proc.returncode != 0:
            raise InfraError(f"pg_ctl stop failed: {proc.stdout.strip()[-300:]}")
        return f"Postgres stopped (pid {pid})"

    # --- internals -------------------------------------------------------------
    def _pid(self) -> int | None:
        pidfile = self.data_dir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def _bindir(self, install: bool = True) -> Path:
        bindir = find_bindir(self.settings.pg_bindir)
        if bindir is None and install and self.is_root and shutil.which("apt-get"):
            self._apt_install()
            bindir = find_bindir(self.settings.pg_bindir)
        if bindir is None:
            raise ToolMissingError(
                "the PostgreSQL server binaries (initdb, pg_ctl) were not found: install "
                "Debian's 'postgresql' package, or set LEADFLOW_PG_BINDIR to their folder, or "
                "LEADFLOW_DATABASE_URL to use an existing server"
            )
        return bindir

    @staticmethod
    def _apt_install() -> None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"],
        ):
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if proc.returncode != 0:
                raise ToolMissingError(
                    f"installing Debian's postgresql package failed ({' '.join(cmd)}): "
                    + proc.stderr.strip()[-300:]
                )

    def _init(self, bindir: Path) -> bool:
        if (self.data_dir / "PG_VERSION").exists():
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.is_root:
            self._choose_root_location()
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._chown(self.data_dir.parent)
        self._chown(self.data_dir)
        proc = self._run(
            [
                str(bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                _PG_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            ],
        )
        if proc.returncode != 0:
            raise ServiceStartError(f"initdb failed: {proc.stdout.strip()[-500:]}")
        return True

    def _choose_root_location(self) -> None:
        """As root, keep the data where the postgres user can reach it."""
        probe = subprocess.run(
            ["runuser", "-u", _PG_USER, "--", "test", "-x", str(self.dir)],
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            return
        digest = hashlib.sha1(str(self.dir).encode()).hexdigest()[:12]  # noqa: S324
        elsewhere = Path("/var/lib/leadflow") / digest / "data"
        (self.dir / "LOCATION").write_text(f"{elsewhere}\n")

    def _chown(self, path: Path) -> None:
        if not self.is_root:
            return
        try:
            user = pwd.getpwnam(_PG_USER)
        except KeyError:
            raise ToolMissingError(
                "running as root, but there is no 'postgres' OS user to own the cluster; "
                "install Debian's 'postgresql' package (it creates the user)"
            ) from None
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, user.pw_uid, user.pw_gid)

    def _run(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        if self.is_root:
            cmd = ["runuser", "-u", _PG_USER, "--", *cmd]
        return subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
            cwd="/",
        )

    def superuser_dsn(self, database: str = "postgres") -> str:
        """DSN of the cluster's superuser (local cluster only)."""
        return f"postgresql://{_PG_USER}@127.0.0.1:{self.settings.pg_port}/{database}"

    def create_database(self, name: str) -> str:
        """Create the empty database ``name``, owned by the owner role; its owner DSN."""
        import psycopg

        with psycopg.connect(self.superuser_dsn(), autocommit=True) as conn:
            conn.execute(_create_database(name))
        return f"postgresql://{OWNER_ROLE}@127.0.0.1:{self.settings.pg_port}/{name}"

    def drop_database(self, name: str) -> None:
        """Drop the database ``name`` if it exists, ending its sessions (``WITH (FORCE)``)."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.superuser_dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def _ensure_database(self) -> None:
        import psycopg
        from psycopg import sql

        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg.connect(self.superuser_dsn(), autocommit=True, connect_timeout=3)
                break
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise ServiceStartError(f"cannot connect to local Postgres: {exc}") from exc
                time.sleep(0.5)
        with conn:
            for role in (OWNER_ROLE, APP_ROLE):
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                if exists.fetchone() is None:
                    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            db = self.settings.pg_database
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
            if exists.fetchone() is None:
                conn.execute(_create_database(db))


def _create_database(name: str) -> sql.Composed:
    """``CREATE DATABASE name OWNER <owner role>`` as a composed statement."""
    from psycopg import sql

    return sql.SQL("CREATE DATABASE {} OWNER {}").format(
        sql.Identifier(name), sql.Identifier(OWNER_ROLE)
    )


def _can_connect(dsn: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _redact(dsn: str) -> str:
    """A DSN with any password replaced by ***."""
    with contextlib.suppress(Exception):
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
        if params.get("password"):
            params["password"] = "***"  # noqa: S105 - a mask, not a password
        return make_conninfo("", **params)
    return "<unparseable dsn>"
