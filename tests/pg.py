"""A throwaway PostgreSQL cluster for tests and benchmarks: initdb + pg_ctl in a private temporary directory.

Never a system service, never a fixed port: the server listens on a free
port on 127.0.0.1 and on a socket in its own directory, and is stopped by
pg_ctl (then by its pid) at the end. PostgreSQL refuses to run as root, so
as root the cluster belongs to the `postgres` user (`runuser`); otherwise
it runs as the current user.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

INSTALL_HINT = "apt-get install postgresql"
SEARCH = ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin",
          "/usr/lib/postgresql/14/bin")


def find_bin_dir() -> tuple[Path | None, str]:
    """The directory holding initdb and pg_ctl, or None and why not."""
    candidates = [Path(d) for d in SEARCH]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.insert(0, Path(on_path).parent)
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            if os.geteuid() == 0:
                try:
                    pwd.getpwnam("postgres")
                except KeyError:
                    return None, "running as root and there is no postgres user to run the server as"
                if not shutil.which("runuser"):
                    return None, "running as root and runuser is missing"
            return directory, ""
    return None, f"PostgreSQL server binaries (initdb, pg_ctl) not found; install them: {INSTALL_HINT}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """`durable=False` (tests): no fsync. Still safe for killing the server (`stop("immediate")`): what a
    commit wrote is in the OS page cache; only a power cut would lose it. Benchmarks keep fsync on."""

    def __init__(self, bin_dir: Path, durable: bool = False, settings: str = "") -> None:
        """`settings`: more server options, e.g. "-c track_commit_timestamp=on"."""
        self.bin_dir = bin_dir
        self.durable = durable
        self.settings = settings
        self.root = Path(tempfile.mkdtemp(prefix="wa-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o700)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        argv = [str(self.bin_dir / tool), *args]
        if self.as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=self.root)
        if check and result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
                               f"\n{self.log_tail()}")
        return result

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except (FileNotFoundError, PermissionError):
            return ""

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off"
        if self.settings:
            options += f" {self.settings}"
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "30", "-l", str(self.log), "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast` (clean) or `immediate` (like a crash: the server recovers from its WAL on the next start)."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "30", "-m", mode, "stop", check=False)

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        import psycopg
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError, PermissionError):
            return None

    def destroy(self) -> None:
        """Stop the server (pg_ctl, then SIGKILL of its postmaster pid if it is still there) and remove its files."""
        self.stop()
        pid = self.postmaster_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
