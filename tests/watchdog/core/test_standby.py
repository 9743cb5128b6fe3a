"""The warm standby under `wa-watchdog run` (conftest BASE_CONFIG, `standby` at its default, true):
a killed or hung bridge is replaced by the waiting standby, a new standby follows, a dead standby is
respawned without touching the bridge, and shutdown leaves nothing behind."""
from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import pytest

from bridge.session_lock import holder_pid
from tests.bridge_support import call
from tests.conftest import Processes, wait_until
from tests.watchdog.core.test_supervision import run, supervise, worker, write_settings
from tests.watchdog.fakes import RecordingAlerts
from tests.watchdog.test_system import EXPECTED, alive, status
from watchdog.control import token as control_token
from watchdog.shared import endpoints
from watchdog.shared.recovery_log import RecoveryLog
from watchdog.core.stale import recorded_children
from watchdog.core.hooks import Hooks
from watchdog.shared.programs import Program
from watchdog.core.states import State


class SameCommand(Hooks):
    """A standby that is the program's own command (the worker blocks on its --hold-lock like a standby)."""

    def standby_argv(self, program: Program) -> tuple[str, ...]:
        return program.argv


same_command = SameCommand()


def up_with_standby(data_dir: Path, not_pids: tuple[int, ...] = ()) -> dict[str, dict] | None:
    """Every component healthy and the bridge with a standby, neither of them one of `not_pids`."""
    components = status(data_dir)
    if not all(components.get(name, {}).get("healthy") for name in EXPECTED):
        return None
    bridge = components["bridge:main"]
    if bridge["standby_pid"] is None or {bridge["pid"], bridge["standby_pid"]} & set(not_pids):
        return None
    return components


def waiting(data_dir: Path, standby: int) -> bool:
    """The standby has loaded everything and blocks on the session lock (it says so in the bridge's log)."""
    log = data_dir / "logs" / "bridge-main.log"
    return log.exists() and f"standby pid {standby}: waiting for session" in log.read_text(errors="replace")


def bridge_records(data_dir: Path, event: str, pid: int) -> list[dict]:
    return [r for r in RecoveryLog(data_dir / "recoveries.jsonl").read()
            if r["component"] == "bridge:main" and r["event"] == event and r.get("pid") == pid]


@pytest.mark.slow
def test_the_standby_takes_over_a_killed_then_a_hung_bridge_and_is_itself_respawned(procs: Processes,
                                                                                    data_dir: Path,
                                                                                    tmp_path: Path) -> None:
    session_dir = data_dir / "accounts/main/session"
    with open(tmp_path / "watchdog.stderr", "wb") as stderr:
        watchdog = procs.start("run", stdout=stderr, stderr=stderr)
    seen: set[int] = set()
    try:
        bridge = wait_until(lambda: up_with_standby(data_dir), 30, message="the system up with a standby")
        bridge = bridge["bridge:main"]
        active, standby = bridge["pid"], bridge["standby_pid"]
        seen |= {active, standby}
        wait_until(lambda: waiting(data_dir, standby), 15, message="the standby waiting on the session lock")
        assert holder_pid(session_dir) == active
        assert recorded_children(data_dir)["bridge:main#standby"] == standby

        # kill -9: the standby becomes the bridge at once; a new standby follows once it is healthy.
        os.kill(active, signal.SIGKILL)
        bridge = wait_until(lambda: (c := up_with_standby(data_dir, (active,))) and c["bridge:main"], 30,
                            message="the standby promoted and a new standby")
        assert bridge["pid"] == standby and bridge["restarts"] == 1
        assert holder_pid(session_dir) == standby
        restart, = bridge_records(data_dir, "restart", active)
        assert restart["new_pid"] == standby and restart["cause"] == "SIGKILL" and restart["standby"] is True
        assert restart["delay_ms"] == 0 and restart["restart_ms"] < 100
        assert holder_pid(session_dir) == standby
        assert bridge_records(data_dir, "exit", active)[0]["cause"] == "SIGKILL"
        healthy, = bridge_records(data_dir, "healthy", standby)
        assert healthy["cause"] == "SIGKILL" and healthy["downtime_ms"] < 10_000
        active, standby = bridge["pid"], bridge["standby_pid"]
        seen.add(standby)
        wait_until(lambda: waiting(data_dir, standby), 15, message="the new standby waiting on the session lock")

        # SIGSTOP: the hung bridge is stopped and the standby takes over.
        os.kill(active, signal.SIGSTOP)
        bridge = wait_until(lambda: (c := up_with_standby(data_dir, (active,))) and c["bridge:main"], 30,
                            message="the hung bridge replaced by its standby")
        assert bridge["pid"] == standby and bridge["restarts"] == 2
        assert bridge_records(data_dir, "hang", active), "the hang was not recorded"
        assert bridge_records(data_dir, "restart", active)[0]["new_pid"] == standby
        wait_until(lambda: not alive(active), 10, message="the hung bridge gone")
        active, standby = bridge["pid"], bridge["standby_pid"]
        seen.add(standby)
        wait_until(lambda: waiting(data_dir, standby), 15, message="the third standby waiting on the session lock")

        # The standby dies on its own: a new one, the bridge untouched.
        os.kill(standby, signal.SIGKILL)
        bridge = wait_until(lambda: (c := up_with_standby(data_dir, (standby,))) and c["bridge:main"], 30,
                            message="a new standby")
        assert bridge["pid"] == active and bridge["restarts"] == 2
        assert holder_pid(session_dir) == active
        assert not bridge_records(data_dir, "exit", standby)
        standby = bridge["standby_pid"]
        seen.add(standby)

        # An operator restart: the bridge is stopped and its standby takes over.
        restarted = call("POST", f"{endpoints.url(data_dir, 'watchdog', 'control')}/restart/bridge:main",
                         headers={"Authorization": f"Bearer {control_token.read(data_dir)}"})[1]
        assert restarted["old_pid"] == active and restarted["pid"] == standby, restarted
        bridge = wait_until(lambda: (c := up_with_standby(data_dir, (active,))) and c["bridge:main"], 30,
                            message="the standby promoted by an operator restart, and a new standby")
        assert bridge["pid"] == standby and bridge["restarts"] == 3
        assert holder_pid(session_dir) == standby
        seen.add(bridge["standby_pid"])
        pids = [c["pid"] for c in status(data_dir).values() if c["pid"]] + [bridge["standby_pid"]]
    finally:
        watchdog.send_signal(signal.SIGTERM)
        assert watchdog.wait(timeout=30) == 0
    assert not [pid for pid in {*pids, *seen} if alive(pid)]
    assert holder_pid(session_dir) is None


@pytest.mark.slow
def test_a_crash_looping_component_still_backs_off_with_a_standby(tmp_path: Path) -> None:
    """Each promotion is immediate, but the next standby waits out the backoff delay, so a crash loop
    ends up alternating promotions with cold restarts that back off; alerted once, never given up."""
    lock = tmp_path / "session.lock"
    crashing = worker("monitor:a", "--hold-lock", str(lock), "--exit-after", "0.2", "--code", "1")
    component = dataclasses.replace(crashing, standby=True, hooks="tests.watchdog.core.test_standby:same_command")
    alerts = RecordingAlerts()

    async def scenario() -> None:
        async with supervise(write_settings(tmp_path), [component], alerts=alerts) as s:
            await s.record("monitor:a", "crash_loop", timeout=20)
            restarts = await s.record("monitor:a", "restart", count=len(s.records("monitor:a", "restart")) + 4,
                                      timeout=20)
            watcher = s.watcher("monitor:a")
            assert watcher.state is not State.FAILED
        promoted = [r for r in restarts if r.get("standby")]
        assert promoted and all(r["delay_ms"] == 0 for r in promoted)
        loop_at = s.records("monitor:a", "crash_loop")[0]["time"]
        cold_after_loop = [r for r in restarts if not r.get("standby") and r["time"] > loop_at]
        assert cold_after_loop and all(0 < r["delay_ms"] <= 400 for r in cold_after_loop), restarts
        assert [a[0] for a in alerts.fired].count("crash_loop") == 1
    run(scenario)
