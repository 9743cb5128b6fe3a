"""The child's health without processes: what probe answers and readiness mean, told to the watcher as
"healthy now" once, and answers after a stop ignored."""
from __future__ import annotations

from pathlib import Path

from tests.watchdog.fakes import FakeChild, bench
from watchdog import probes
from watchdog.child_health import ChildHealth
from watchdog.shared.programs import Check, Program

PROBE = Check("http", endpoint="api", path="/api/health")


class Events:
    def __init__(self) -> None:
        self.healthy = 0
        self.changes = 0

    def became_healthy(self) -> None:
        self.healthy += 1

    def changed(self) -> None:
        self.changes += 1


def health(tmp_path: Path, ready: Check = PROBE):
    b = bench(tmp_path)
    events = Events()
    part = ChildHealth(Program("bridge:main", ("true",), ready=ready, liveness=(PROBE,)),
                       b.program_alerts("bridge:main"), events)
    part.begin(FakeChild())
    return part, events, b


def test_an_ok_answer_from_the_readiness_probe_makes_it_healthy_once(tmp_path: Path) -> None:
    part, events, _ = health(tmp_path)
    assert part.condition == "starting" and not part.started
    part.on_probe(PROBE, probes.HealthResult(probes.FAILURE, "connection refused"), counts=False)
    assert not part.healthy and not part.started
    part.on_probe(PROBE, probes.HealthResult(probes.OK, "ok"), counts=True)
    part.on_probe(PROBE, probes.HealthResult(probes.OK, "ok"), counts=True)
    assert part.healthy and part.ready and part.condition == "ready" and events.healthy == 1


def test_with_readiness_by_notify_an_answer_starts_it_up_but_ready_1_makes_it_healthy(tmp_path: Path) -> None:
    part, events, _ = health(tmp_path, ready=Check("notify"))
    part.on_probe(PROBE, probes.HealthResult(probes.OK, "ok"), counts=True)
    assert part.started and not part.healthy and events.healthy == 0
    part.ready_by_check()
    assert part.healthy and events.healthy == 1


def test_an_outage_upstream_is_not_healthy_but_settled_and_alerted(tmp_path: Path) -> None:
    part, events, b = health(tmp_path)
    part.on_probe(PROBE, probes.HealthResult(probes.OK, "ok"), counts=True)
    part.on_probe(PROBE, probes.HealthResult(probes.OUTAGE, "disconnected", "server gone"), counts=True)
    assert not part.healthy and part.condition == "disconnected" and part.upstream_settled
    assert [a[0] for a in b.alerts.fired] == ["disconnect"]
    part.on_probe(PROBE, probes.HealthResult(probes.OK, "connected"), counts=True)
    assert part.healthy and part.condition == "connected" and not part.upstream_settled
    assert "disconnect" in [r[0] for r in b.alerts.resolved] and events.healthy == 2


def test_answers_after_a_stop_do_not_count_and_an_exit_before_ready_leaves_its_last_words(tmp_path: Path) -> None:
    part, events, _ = health(tmp_path)
    part.status("store accounts/main/messages.db is corrupt")
    part.stopping()
    part.on_probe(PROBE, probes.HealthResult(probes.OK, "ok"), counts=True)
    part.ready_by_check()
    assert not part.healthy and events.healthy == 0
    assert part.exited() == "store accounts/main/messages.db is corrupt"
    assert part.condition == "exited" and not part.started


def test_an_overloaded_answer_is_shown_as_the_condition_without_touching_health_or_alerts(tmp_path: Path) -> None:
    """The connection cap's 503 met by a probe: alive and busy. Shown; neither unhealthy nor alerted."""
    part, events, b = health(tmp_path)
    part.on_probe(PROBE, probes.HealthResult(probes.OK, "ok"), counts=True)
    part.on_probe(PROBE, probes.HealthResult(probes.OVERLOADED, "overloaded", "at its limit"), counts=True)
    assert part.healthy and part.condition == "overloaded" and not b.alerts.fired and events.healthy == 1
    part.on_probe(PROBE, probes.HealthResult(probes.OK, "ok"), counts=True)
    assert part.healthy and part.condition == "ready"
