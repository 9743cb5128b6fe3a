"""What others read of a watcher: its phase as status shows it, health, restarts, pids, `status()`, `overdue()`.

Read-only: nothing here changes the program (the lifecycle is watchdog/core/watcher.py, exits are
watchdog/core/watcher_exits.py). A base of Watcher, which sets every attribute declared here.
"""
from __future__ import annotations

import collections
import time

from watchdog.core.child import ChildProcess
from watchdog.core.child_checks import Checks
from watchdog.core.child_health import ChildHealth
from watchdog.core.context import Context
from watchdog.core.failure_history import FailureHistory
from watchdog.core.hooks import Hooks
from watchdog.core.program_alerts import ProgramAlerts
from watchdog.core.recovery import Recoveries
from watchdog.core.standby import WarmStandby
from watchdog.core.states import Phase, State, StateMachine
from watchdog.shared import endpoints


class WatcherView:
    """The read side of Watcher: its phase, health and status, computed from the parts it owns."""

    name: str
    ctx: Context
    hooks: Hooks
    machine: StateMachine
    child: ChildProcess | None
    recoveries: Recoveries
    alerts: ProgramAlerts
    failures: FailureHistory
    health: ChildHealth
    checks: Checks
    standby: WarmStandby | None
    _ending: bool
    _stopped_while: Phase

    @property
    def phase(self) -> Phase:
        return self.machine.state

    @property
    def state(self) -> State:
        """What status shows of the phase."""
        return self.phase.shown

    @property
    def judged(self) -> Phase:
        """The phase health is read from (HealthEvents): while a child is stopped, the one the stop began in."""
        return self._stopped_while if self.phase.stopping else self.phase

    @property
    def is_running(self) -> bool:
        return self.state is State.RUNNING

    @property
    def healthy(self) -> bool:
        return self.health.healthy

    @property
    def condition(self) -> str:
        return self.health.condition

    @property
    def shutting_down(self) -> bool:
        return self._ending

    @property
    def restart_count(self) -> int:
        return self.recoveries.count

    @property
    def restart_times(self) -> collections.deque[float]:
        return self.recoveries.times

    @property
    def last_cause(self) -> str:
        return self.recoveries.last_cause

    @property
    def settled(self) -> bool:
        """Healthy, or not going to be by waiting: failed, or up while its upstream is away or an operator is
        needed (a bridge in a WhatsApp outage). What a program with this one in `after` waits for."""
        return self.healthy or self.state is State.FAILED or self.health.upstream_settled

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child and self.child.running else None

    @property
    def standby_pid(self) -> int | None:
        return self.standby.pid if self.standby else None

    def status(self) -> dict:
        """One program for `wa-watchdog status --json` (see the control API)."""
        record = endpoints.read(self.ctx.data_dir, self.name)
        pid = self.pid
        return {
            "name": self.name,
            "pid": pid,
            "state": str(self.state),
            "healthy": self.healthy,
            "condition": self.condition,
            "uptime_s": round(time.monotonic() - self.child.started_at, 3) if pid and self.child else None,
            "restarts": self.restart_count,
            "last_cause": self.last_cause,
            "endpoints": record["endpoints"] if record and pid and record.get("pid") == pid else {},
            "status_text": self.health.status_text,
            "next_start_in_s": self.failures.next_start_in() if self.phase is Phase.BACKOFF else None,
            "alerts": sorted(self.alerts.firing),
            **({"standby_pid": self.standby_pid} if self.standby else {}),
            **self.hooks.status_fields(self.health.last_probe),
        }

    def overdue(self) -> str | None:
        """A check that should have acted by now and has not: a sign the watchdog itself is wedged or broken."""
        age = self.machine.age()
        if self.phase is Phase.EXITED and age > self.ctx.settings.term_grace + 10:
            return f"{self.name}: exited {age:.0f} s ago and neither restarted nor failed"
        if not self.phase.up or self.pid is None:
            return None
        return self.checks.overdue()
