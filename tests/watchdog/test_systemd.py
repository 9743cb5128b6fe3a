"""wa-watchdog.service under a real systemd user manager (recipe: ../shared/SYSTEMD-SANDBOX.md).

The manager runs in a private mount namespace (its own tmpfs on /run) as the
namespace's only process: killing it by pid ends the namespace. The shipped
unit is installed with ExecStart pointing at this venv's wa-watchdog and a
config on free ports. Checked: active only after READY=1, the STATUS= line in
`systemctl show`, and when the watchdog is frozen with SIGSTOP, systemd
restarts it and the new watchdog owns the one and only bridge of the session.
The same for wa-bridge@.service: a bridge on its own speaks sd_notify to
systemd directly, and a frozen one is replaced with the session lock following.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from bridge.session_lock import holder_pid
from tests.conftest import Processes, wait_until
from tests.watchdog.test_systemd_units import SHIPPED_BINARY, UNITS, VENV_BINARY
from watchdog.shared import endpoints

SYSTEMD = Path("/lib/systemd/systemd")
UNIT = "wa-watchdog.service"
BRIDGE_TEMPLATE = "wa-bridge@.service"
# Short, so a frozen watchdog is replaced within seconds, yet long enough for a cold start on
# a loaded 2-core machine: systemd's watchdog runs from exec, before READY=1, and 3 s was
# seen to expire there when other test runs competed for the CPU.
WATCHDOG_SEC = 5
NAMESPACE_SCRIPT = "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && exec {systemd} --user"
# Only a system manager can switch users and build the mount namespaces of the hardening
# options (a user manager fails them with 226/NAMESPACE); a private /tmp would also hide
# the test's config and data directory.
SYSTEM_ONLY = ("User", "Group", "StateDirectory", "WorkingDirectory", "PrivateTmp", "ProtectSystem", "ProtectHome")


def _namespace_problem() -> str | None:
    """Why this machine cannot run a user manager in a private mount namespace, or None if it can."""
    for tool in ("unshare", "nsenter", "systemctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not SYSTEMD.exists():
        return f"{SYSTEMD} is not installed"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /run"], capture_output=True,
                           text=True, timeout=30)
    if probe.returncode != 0:
        return f"unshare -m with a private /run is not permitted here: {probe.stderr.strip()}"
    return None


def user_unit(config_path: Path, output: Path, shipped: str = UNIT) -> str:
    """A shipped unit, made runnable by a user manager: this venv, this config, WatchdogSec short, output to a file."""
    lines = []
    for line in (UNITS / shipped).read_text(encoding="utf-8").splitlines():
        key = line.split("=", 1)[0].strip()
        if key in SYSTEM_ONLY:
            continue
        if key == "ExecStart":
            line = line.replace(SHIPPED_BINARY, str(VENV_BINARY)).replace("/etc/wa-watchdog/config.toml",
                                                                          str(config_path))
        elif key == "WatchdogSec":
            line = f"WatchdogSec={WATCHDOG_SEC}s"
        lines.append(line)
        if line == "[Service]":
            lines.append(f"StandardOutput=append:{output}")
            lines.append(f"StandardError=append:{output}")
    return "\n".join(lines) + "\n"


class UserManager:
    """A systemd user manager in its own mount namespace; systemctl reaches it with nsenter.

    Every manager started this way shares the machine's one cgroup tree, and a
    unit's cgroup is named after the unit: two test runs at once (two helpers, or
    a suite and a single test) would stop each other's processes if both used
    `wa-watchdog.service`. So units are installed under a name unique to this
    run. `owned` remembers every process the units started (pid and start time,
    so a reused pid is never hit): whatever outlives the manager is killed.
    """

    def __init__(self, home: Path) -> None:
        runtime = home / "runtime"
        runtime.mkdir(mode=0o700, parents=True)
        self.unit_dir = home / ".config" / "systemd" / "user"
        self.unit_dir.mkdir(parents=True)
        self.log = home / "systemd.log"
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
                    "XDG_RUNTIME_DIR": str(runtime), "LANG": "C.UTF-8"}
        self.proc: subprocess.Popen | None = None
        self.outputs: list[Path] = []
        self.owned: dict[int, psutil.Process] = {}
        self.history: list[str] = []  # every distinct state seen, for the failure message

    def install(self, shipped: str, config_path: Path) -> str:
        """Install a shipped unit adapted for this manager; returns the unit's (run-unique) name."""
        name = shipped.replace("@.service" if "@" in shipped else ".service",
                               f"-t{os.getpid()}" + ("@.service" if "@" in shipped else ".service"))
        output = config_path.parent / f"{shipped.split('.')[0]}.out"
        (self.unit_dir / name).write_text(user_unit(config_path, output, shipped), encoding="utf-8")
        self.outputs.append(output)
        return name

    def own(self, *pids: int) -> None:
        for pid in pids:
            try:
                self.owned.setdefault(pid, psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass

    def start(self) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(["unshare", "-m", "sh", "-c", NAMESPACE_SCRIPT.format(systemd=SYSTEMD)],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self._running, timeout=20, interval=0.05, message="the systemd user manager to run")

    def _running(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"systemd --user exited with {self.proc.returncode}: {self.log.read_text()}")
        return self.systemctl("is-system-running", check=False).stdout.strip() in ("running", "degraded")

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        assert self.proc is not None
        done = subprocess.run(["nsenter", "-t", str(self.proc.pid), "-m", "systemctl", "--user", *args],
                              env=self.env, capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise AssertionError(f"systemctl --user {' '.join(args)}: {done.stderr.strip()}")
        return done

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.systemctl("show", unit, "-p", ",".join(properties)).stdout
        shown = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        seen = f"{unit} {' '.join(f'{k}={v}' for k, v in sorted(shown.items()) if k != 'StatusText')}"
        if not self.history or not self.history[-1].endswith(seen):
            self.history.append(f"{time.strftime('%H:%M:%S')} {seen}")
        return shown

    def start_until_active(self, unit: str) -> int:
        """`start --no-block`, then poll: the MainPID once active.

        Whether "activating" is seen on the way depends on how fast the child gets ready against the poll:
        the tests judge Type=notify by what holds once active (the child healthy), not by the race.
        """
        self.systemctl("start", "--no-block", unit)

        def active() -> dict[str, str] | None:
            shown = self.show(unit, "ActiveState", "SubState", "MainPID", "Type")
            assert shown["Type"] == "notify", shown
            if shown["ActiveState"] == "failed" or shown["SubState"] == "auto-restart":
                raise AssertionError(f"{unit} did not start: {shown}")
            return shown if shown["ActiveState"] == "active" else None

        pid = int(wait_until(active, timeout=30, interval=0.02, message=f"{unit} to become active")["MainPID"])
        self.own(pid)
        return pid

    def wait_replaced(self, unit: str, old_pid: int) -> int:
        """Wait for systemd to have restarted `unit` (NRestarts grew) with a new main process; its pid."""
        def replaced() -> int | None:
            shown = self.show(unit, "ActiveState", "MainPID", "NRestarts")
            new_pid = int(shown["MainPID"])
            ok = int(shown["NRestarts"]) >= 1 and shown["ActiveState"] == "active" and new_pid not in (0, old_pid)
            return new_pid if ok else None

        new_pid = wait_until(replaced, timeout=30, interval=0.05, message=f"systemd to replace the frozen {unit}")
        self.own(new_pid)
        return new_pid

    def stop_unit(self, unit: str) -> dict[str, str]:
        self.systemctl("stop", unit)  # blocks until the unit's processes have stopped
        return self.show(unit, "ActiveState", "Result")

    @contextmanager
    def explained(self) -> Iterator[None]:
        """Add what the units and systemd printed to a failing assertion."""
        try:
            yield
        except AssertionError as exc:
            said = [f"--- {out.name} ---\n{out.read_text(errors='replace')[-3000:]}" for out in self.outputs
                    if out.exists()]
            said.append("--- states seen ---\n" + "\n".join(self.history[-30:]))
            said.append(f"--- systemd ---\n{self.log.read_text(errors='replace')[-2000:]}")
            exc.args = ("\n".join([str(exc.args[0]) if exc.args else "", *said]),)
            raise

    def stop(self) -> None:
        """SIGTERM the manager by pid (it stops its units and exits, ending the namespace); SIGKILL what is left."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for proc in self.owned.values():
            try:
                proc.kill()  # psutil refuses if the pid now belongs to another process
            except psutil.NoSuchProcess:
                pass


def health(data_dir: Path, component: str = "bridge:main") -> int | None:
    """HTTP status of a component's /api/health, or None if it does not answer."""
    url = endpoints.url(data_dir, component)
    if not url:
        return None
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def components(data_dir: Path) -> dict[str, dict]:
    """The running watchdog's view of its components, from its control API."""
    with urllib.request.urlopen(f"{endpoints.url(data_dir, 'watchdog', 'control')}/status", timeout=5) as response:
        return {component["name"]: component for component in json.load(response)}


def bridges_of(config_path: Path) -> list[int]:
    """Live (not zombie) bridge processes of account main started with this config."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if (proc.info["status"] != psutil.STATUS_ZOMBIE and "bridge" in cmdline and str(config_path) in cmdline
                and re.search(r"--account(=| )main\b", " ".join(cmdline))):
            found.append(proc.info["pid"])
    return found


def descendants(pid: int) -> set[int]:
    try:
        return {child.pid for child in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.slow
def test_systemd_starts_watches_and_replaces_a_frozen_watchdog(manager: UserManager, config_path: Path,
                                                               data_dir: Path) -> None:
    unit = manager.install(UNIT, config_path)
    session_dir = data_dir / "accounts" / "main" / "session"
    with manager.explained():
        manager.start()
        old_main = manager.start_until_active(unit)
        # Type=notify: active only after READY=1, which the watchdog sends once every bridge is
        # healthy and every monitor ready.
        assert health(data_dir) == 200, "active before the bridge was healthy"
        unready = {name: c["state"] for name, c in components(data_dir).items()
                   if name.startswith(("bridge:", "monitor:")) and not c["healthy"]}
        assert not unready, f"active while not ready: {unready}"
        assert endpoints.read(data_dir, "watchdog")["pid"] == old_main

        status_text = wait_until(lambda: manager.show(unit, "StatusText")["StatusText"], timeout=10,
                                 message="a STATUS= line")
        assert "main" in status_text and "\n" not in status_text, status_text

        old_children = descendants(old_main)
        manager.own(*old_children)
        old_bridge = holder_pid(session_dir)
        assert old_bridge in old_children, (old_bridge, old_children)
        assert manager.show(unit, "NRestarts")["NRestarts"] == "0"

        os.kill(old_main, signal.SIGSTOP)  # a wedged watchdog: alive, but no more WATCHDOG=1
        new_main = manager.wait_replaced(unit, old_main)
        wait_until(lambda: all(gone(pid) for pid in {old_main, *old_children}), timeout=10,
                   message="the frozen watchdog and its children to be gone")
        wait_until(lambda: health(data_dir) == 200, timeout=15, message="the new bridge to be healthy")
        manager.own(*descendants(new_main))
        new_bridge = holder_pid(session_dir)
        assert new_bridge is not None and new_bridge != old_bridge
        assert new_bridge in descendants(new_main), "the session is held by a process the new watchdog does not own"
        # One session holder; the only other bridge is the new watchdog's own standby, waiting on the lock.
        standby = wait_until(lambda: components(data_dir)["bridge:main"]["standby_pid"], timeout=15,
                             message="the new watchdog's standby")
        manager.own(standby)
        assert standby in descendants(new_main), "a standby the new watchdog does not own"
        assert sorted(bridges_of(config_path)) == sorted([new_bridge, standby]), \
            "a bridge on the session besides the holder and the new watchdog's standby"
        assert endpoints.read(data_dir, "watchdog")["pid"] == new_main

        assert manager.stop_unit(unit) == {"ActiveState": "inactive", "Result": "success"}
        assert bridges_of(config_path) == []


@pytest.mark.slow
def test_a_bridge_runs_on_its_own_under_systemd(manager: UserManager, procs: Processes, config_path: Path,
                                               data_dir: Path) -> None:
    """wa-bridge@main: READY=1 and heartbeats straight from the bridge; a frozen bridge is replaced, the lock follows."""
    unit = manager.install(BRIDGE_TEMPLATE, config_path).replace("@.service", "@main.service")
    session_dir = data_dir / "accounts" / "main" / "session"
    procs.start("sim")  # WhatsApp's side, outside systemd like the real one
    endpoints.wait_url(data_dir, "sim", timeout=15)
    with manager.explained():
        manager.start()
        old_pid = manager.start_until_active(unit)
        assert health(data_dir) == 200, "active before the bridge was connected"
        assert holder_pid(session_dir) == old_pid
        assert wait_until(lambda: manager.show(unit, "StatusText")["StatusText"], timeout=10,
                          message="a STATUS= line from the bridge")

        os.kill(old_pid, signal.SIGSTOP)
        new_pid = manager.wait_replaced(unit, old_pid)
        wait_until(lambda: gone(old_pid), timeout=10, message="the frozen bridge to be gone")
        assert holder_pid(session_dir) == new_pid
        assert bridges_of(config_path) == [new_pid]
        assert manager.stop_unit(unit) == {"ActiveState": "inactive", "Result": "success"}


def test_the_user_unit_is_the_shipped_one_adapted(tmp_path: Path) -> None:
    """What the test installs differs from the shipped unit only where a user manager requires it."""
    unit = user_unit(tmp_path / "wa.toml", tmp_path / "out")
    assert f"ExecStart={VENV_BINARY} run --config {tmp_path / 'wa.toml'}" in unit
    assert f"WatchdogSec={WATCHDOG_SEC}s" in unit and "Type=notify" in unit and "KillMode=control-group" in unit
    assert not any(line.startswith(tuple(f"{key}=" for key in SYSTEM_ONLY)) for line in unit.splitlines())
    bridge = user_unit(tmp_path / "wa.toml", tmp_path / "out", BRIDGE_TEMPLATE)
    assert f"ExecStart={VENV_BINARY} bridge --account %i --config {tmp_path / 'wa.toml'}" in bridge
