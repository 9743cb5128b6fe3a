"""Stand-ins for what the watcher's parts are given, so the parts are driven without processes."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from watchdog.core.program_alerts import ProgramAlerts
from watchdog.core.recovery import Records
from watchdog.core.states import Phase, program_machine
from watchdog.shared.recovery_log import RecoveryLog


class RecordingAlerts:
    """Stands in for the AlertManager where a test looks at what the watcher decided, not at delivery."""

    def __init__(self) -> None:
        self.fired: list[tuple[str, str, str, float | None]] = []
        self.resolved: list[tuple[str, str, str]] = []

    def fire(self, rule: str, component: str, summary: str, duration_s: float | None = None) -> None:
        self.fired.append((rule, component, summary, duration_s))

    def resolve(self, rule: str, component: str, summary: str) -> None:
        self.resolved.append((rule, component, summary))

    async def close(self) -> None:
        pass



class RecordingMetrics:
    def __init__(self) -> None:
        self.restarts: list[tuple[str, str]] = []
        self.recoveries: list[tuple[str, float]] = []

    def count_restart(self, component: str, kind: str) -> None:
        self.restarts.append((component, kind))

    def observe_recovery(self, component: str, seconds: float) -> None:
        self.recoveries.append((component, seconds))

    def observe_outage(self, component: str, seconds: float) -> None:
        pass


@dataclass
class FakeChild:
    """What the parts read of a ChildProcess."""

    pid: int = 4242
    running: bool = True
    started_at: float = 0.0


class Verdicts:
    """The watcher's side of ChildHealth (HealthEvents) on the real checked machine: a child just started,
    each verdict a transition, "healthy now" and "status changed" counted."""

    def __init__(self, name: str = "bridge:main") -> None:
        self.machine = program_machine(name, lambda old, new: None)
        self.machine.set(Phase.STARTING)
        self.healthy = 0
        self.changes = 0

    @property
    def judged(self) -> Phase:
        return self.machine.state

    def answering(self) -> None:
        self.machine.set(Phase.STARTED)

    def became_healthy(self) -> None:
        self.healthy += 1
        self.machine.set(Phase.HEALTHY)

    def lost_health(self) -> None:
        self.machine.set(Phase.READY)

    def changed(self) -> None:
        self.changes += 1


@dataclass
class Bench:
    """One program's records (in a real recovery log file), alerts and metrics."""

    log: RecoveryLog
    alerts: RecordingAlerts = field(default_factory=RecordingAlerts)
    metrics: RecordingMetrics = field(default_factory=RecordingMetrics)

    def program_alerts(self, name: str) -> ProgramAlerts:
        return ProgramAlerts(name, SimpleNamespace(alerts=self.alerts, metrics=self.metrics), lambda: None)

    def records(self, name: str) -> Records:
        return Records(self.log, name)

    def events(self) -> list[str]:
        return [r["event"] for r in self.log.read()]


def bench(tmp_path: Path) -> Bench:
    return Bench(RecoveryLog(tmp_path / "recoveries.jsonl"))
