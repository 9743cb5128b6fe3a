"""A whole wa-watchdog system under `wa-watchdog run` in one directory: for chaos runs and drop benchmarks.

The system is the real thing (simulator, bridge, one monitor per project,
the watchdog supervising them) on free ports; this module only writes the
config, starts `wa-watchdog run`, talks to the published control API and
simulator, reads the drops store (drops.db, or PostgreSQL when given a
database URL) and messages.db read-only, and ends what it started by pid.
With `separate_sim` the simulator runs as a process of its own
(`wa-watchdog sim`, `[sim] enabled = false` for the watchdog), started before
the system and stopped after it: WhatsApp then keeps queuing messages for a
stopped system, as the real one does.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import typing
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import psutil

from watchdog.shared import endpoints, file_modes

if typing.TYPE_CHECKING:
    from monitors.store.postgres import PostgresBackend

ROOT = Path(__file__).resolve().parents[2]
PHONE = "27710000000"
CONTRACTORS = tuple(f"2771000{n:04d}@s.whatsapp.net" for n in range(1, 7))
T = TypeVar("T")


def group_jid(n: int) -> str:
    return f"1203630000000000{n:02d}@g.us"


# The account's pace off (bridge/pace.py): messages go out as soon as the machinery allows.
MESSAGE_ACK = 'feedback = { ack = "message", coalesce_s = 0 }'
PACE_OFF = "pace = { per_minute = 0, per_hour = 0, per_day = 0, reactions_per_minute = 0, chat_gap_s = 0, chat_jitter_s = 0, typing = false, ramp_s = 0 }"


def config_text(projects: int, watchdog: str = "", database_url: str = "", account: str = "",
                projects_per_process: int | str = 1, probe_period: float = 0.2, separate_sim: bool = False,
                pace: str = PACE_OFF, ack: str = MESSAGE_ACK) -> str:
    """One sim account and `projects` projects, each watching its own group (two dev, the rest prod);
    the drops store in PostgreSQL when `database_url` is given. `watchdog` and `account` are extra lines
    for [watchdog] and [accounts.main] (e.g. `standby = false`). `separate_sim`: the watchdog does not
    run the simulator (`RunningSystem(separate_sim=True)` does). `pace`: the account's `pace = {...}` line: off by
    default (these benchmarks measure the machinery); "" = the product's default pace (bridge/pace.py). `ack`: each
    project's `feedback` line: each drop acknowledged by its own message, at once (the runs count acknowledgements
    in /sim/sent, one per drop); "" = the product's default (a reaction). A config for a release older than these
    keys passes "" for both."""
    sim = "enabled = false\n" if separate_sim else ""
    parts = [f'data_dir = "data"\n\n[watchdog]\ncontrol_port = 0\n{watchdog}\n[sim]\nport = 0\n{sim}']
    if projects_per_process != "auto":  # the product's default groups many projects; 1 is each alone
        parts.append(f'[monitors]\nprojects_per_process = {projects_per_process}\n')
    for n in range(1, projects + 1):
        members = ", ".join(f'"{c.split("@")[0]}"' for c in CONTRACTORS)
        parts.append(f'[[sim.groups]]\njid = "{group_jid(n)}"\nname = "Project {n}"\nparticipants = [{members}]\n')
    parts.append(f'[accounts.main]\ntransport = "sim"\nphone = "{PHONE}"\napi_port = 0\nwatchdog_sec = 3.0\n{account}\n{pace}\n'
                 f'[accounts.main.probe]\nperiod = {probe_period:g}\ninitial_delay = 1.0\n')
    for n in range(1, projects + 1):
        environment = "dev" if n > max(projects - 2, 1) else "prod"
        parts.append(f'[[projects]]\nname = "p{n}"\nenvironment = "{environment}"\ngroups = ["{group_jid(n)}"]\n{ack}\n')
    if database_url:
        parts.append(f'[database]\nurl = "{database_url}"\n')
    return "\n".join(parts)


def slow_start(config: str) -> str:
    """The same system with 5 s for the bridge's first health answer: on a loaded 2-core machine a cold
    bridge takes more than the 1 s `config_text` gives it, and the probe would restart it in a loop."""
    return config.replace("initial_delay = 1.0", "initial_delay = 5.0")


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def http(method: str, url: str, body: object = None, timeout: float = 10.0) -> object:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


SOURCE_TREE = (sys.executable, "-m", "watchdog.cli")  # this checkout's code, run from its root


class RunningSystem:
    def __init__(self, workdir: Path, config: str, database_url: str = "",
                 command: Sequence[str] = SOURCE_TREE, cwd: Path = ROOT, env: dict[str, str] | None = None,
                 separate_sim: bool = False) -> None:
        """`database_url`: the drops store is in that PostgreSQL database (the config must say so too).
        `command` runs wa-watchdog (another installation's `bin/wa-watchdog`), from `cwd`; `env`: more
        environment for the whole tree (e.g. libfaketime's). `separate_sim`: run the simulator as a process
        of its own (the config from `config_text(separate_sim=True)`), with the same environment."""
        self.workdir = workdir
        self.env = env or {}
        self.database_url = database_url
        self.command = tuple(command)
        self.cwd = cwd
        self.separate_sim = separate_sim
        self._pg: PostgresBackend | None = None
        self.config_path = workdir / "wa.toml"
        self.data_dir = workdir / "data"
        self.log_path = workdir / "run.log"
        workdir.mkdir(parents=True, exist_ok=True)
        file_modes.write_atomic(self.config_path, config)  # private: it may hold a webhook secret
        self.proc: subprocess.Popen | None = None
        self.sim_proc: subprocess.Popen | None = None

    # -- life cycle ------------------------------------------------------------------------------

    def _spawn(self, subcommand: str, log_path: Path) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items()  # PYTHONPATH: the code is the command's own, nothing else
               if not k.startswith(("NOTIFY_SOCKET", "WATCHDOG_")) and k != "PYTHONPATH"} | self.env
        with open(log_path, "ab") as log:
            return subprocess.Popen([*self.command, subcommand, "--config", str(self.config_path)], cwd=self.cwd,
                                    env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def start(self, timeout: float = 60.0) -> None:
        """Start the system (after the separate simulator, if not running yet); wait until every component is
        healthy."""
        if self.separate_sim and (self.sim_proc is None or self.sim_proc.poll() is not None):
            self.start_sim(timeout)
        self.proc = self._spawn("run", self.log_path)
        try:
            wait_for(lambda: self.proc.poll() is not None or self.all_healthy(), timeout, "every component healthy")
            if self.proc.returncode is not None:
                raise TimeoutError(f"exited with {self.proc.returncode}")
        except TimeoutError as exc:
            self.stop()
            raise TimeoutError(f"system did not come up ({exc}); see {self.log_path}:\n{self.log_tail()}") from None

    def start_sim(self, timeout: float = 60.0) -> None:
        """The separate simulator alone (a cluster's hosts may each be elsewhere)."""
        sim_log = self.workdir / "sim.log"
        self.sim_proc = self._spawn("sim", sim_log)
        pid = self.sim_proc.pid
        try:  # bridges find it by this record: the system must not start before it is there
            wait_for(lambda: self.sim_proc.poll() is None and (endpoints.read(self.data_dir, "sim") or {}).get("pid")
                     == pid, timeout, "the simulator's endpoint (run/sim.json)")
        except TimeoutError:
            self._stop_sim(timeout)
            raise TimeoutError(f"the simulator did not come up; see {sim_log}") from None

    def stop(self, timeout: float = 30.0, sim: bool = True) -> int | None:
        """SIGTERM the watchdog (it stops its children); anything it left behind is killed by pid. Then the
        separate simulator, unless `sim` is False (WhatsApp keeps queuing for the stopped system).
        Returns the watchdog's exit code."""
        code = self._stop_system(timeout)
        if sim:
            self._stop_sim(timeout)
        return code

    def _stop_sim(self, timeout: float) -> None:
        if self.sim_proc is None or self.sim_proc.poll() is not None:
            return
        self.sim_proc.send_signal(signal.SIGTERM)  # a Popen's pid: never a reused one while not waited for
        try:
            self.sim_proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.sim_proc.kill()
            self.sim_proc.wait()

    def _stop_system(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for child in children:  # psutil checks the create time: a reused pid is never hit
            try:
                child.send_signal(signal.SIGCONT)
                child.kill()
            except psutil.NoSuchProcess:
                pass
        if self._pg is not None:
            self._pg.close()
            self._pg = None
        return self.proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    # -- the watchdog's view -----------------------------------------------------------------------

    def status(self) -> list[dict]:
        control = endpoints.url(self.data_dir, "watchdog", "control")
        if control is None:
            return []
        try:
            return http("GET", f"{control}/status", timeout=5)  # type: ignore[return-value]
        except (OSError, ValueError):
            return []

    def all_healthy(self) -> bool:
        components = self.status()
        return bool(components) and all(c["healthy"] for c in components)

    def pid(self, component: str) -> int | None:
        return next((c["pid"] for c in self.status() if c["name"] == component), None)

    # -- the simulator -----------------------------------------------------------------------------

    @property
    def sim_url(self) -> str:
        url = endpoints.url(self.data_dir, "sim")
        if url is None:
            raise RuntimeError("the simulator has not published its URL")
        return url

    def inject(self, chat_jid: str, sender_jid: str, text: str) -> dict:
        return http("POST", f"{self.sim_url}/sim/inject",  # type: ignore[return-value]
                    {"chat_jid": chat_jid, "sender_jid": sender_jid, "text": text})

    def sent(self) -> list[dict]:
        return http("GET", f"{self.sim_url}/sim/sent", timeout=30)  # type: ignore[return-value]

    def disconnect(self, phone: str = PHONE, reason: str = "chaos") -> bool:
        return http("POST", f"{self.sim_url}/sim/disconnect",  # type: ignore[index]
                    {"session": phone, "reason": reason})["disconnected"]

    # -- the stores, read-only ---------------------------------------------------------------------

    def query(self, database: str, sql: str, *params: object) -> list[tuple]:
        """Rows from the drops store or the main account's messages.db ([] while it does not exist or is down)."""
        if database == "drops" and self.database_url:
            from monitors.store.postgres import PostgresBackend
            from monitors.store.sql import StoreUnavailable
            self._pg = self._pg or PostgresBackend(self.database_url)
            try:
                return self._pg.rows(sql, params)
            except StoreUnavailable:
                return []
        path = self.data_dir / ("drops.db" if database == "drops" else "accounts/main/messages.db")
        if not path.exists():
            return []
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return list(conn.execute(sql, params))
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()
