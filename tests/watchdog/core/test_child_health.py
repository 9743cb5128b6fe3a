"""The child's health without processes: what probe answers and readiness mean, told to the watcher as
"healthy now" once, and answers after a stop ignored."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from loguru import logger

from tests.conftest import until
from tests.watchdog.fakes import Bench, FakeChild, Verdicts, bench
from tests.watchdog.core.test_supervision import health_bridge, run, set_health, supervise, write_settings
from watchdog.core import probes
from watchdog.shared.alerts import AlertManager
from watchdog.core.child_health import ChildHealth
from watchdog.core.hooks import Hooks
from watchdog.shared.programs import Check, Program
from watchdog.shared.recovery_log import RecoveryLog

PROBE = Check("http", endpoint="api", path="/api/health")


def health(tmp_path: Path, ready: Check = PROBE, b: Bench | None = None, hooks: str = "bridge.supervision:hooks"):
    b = b or bench(tmp_path)
    events = Verdicts()
    part = ChildHealth(Program("bridge:main", ("true",), ready=ready, liveness=(PROBE,), hooks=hooks),
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


def test_without_hooks_naming_it_an_outage_is_the_cores_outage_rule_and_ends_with_an_ok_answer(tmp_path: Path) -> None:
    part, events, b = health(tmp_path, hooks="")
    part.on_probe(PROBE, probes.HealthResult(probes.OK, "ok"), counts=True)
    part.on_probe(PROBE, probes.HealthResult(probes.OUTAGE, "upstream_down", "db gone"), counts=True)
    assert [a[0] for a in b.alerts.fired] == ["outage"] and part.upstream_settled
    part.on_probe(PROBE, probes.HealthResult(probes.OK, "ok"), counts=True)
    assert [r[0] for r in b.alerts.resolved] == ["outage"] and part.healthy and events.healthy == 2


def test_healthy_again_ends_a_hang_a_failure_by_exit_and_an_operator_case(tmp_path: Path) -> None:
    """Readiness by READY=1 (no OK answer to end them): being healthy resolves what health ends."""
    part, _, b = health(tmp_path, ready=Check("notify"))
    alerts = part.alerts
    alerts.fire("hang", "hung")
    alerts.fire("not_paired", "exit 4")
    alerts.fire("crash_loop", "looping")
    part.on_probe(PROBE, probes.HealthResult(probes.OPERATOR, "logged_out", "unlinked"), counts=True)
    part.ready_by_check()
    assert part.healthy and sorted(r[0] for r in b.alerts.resolved) == ["hang", "logged_out", "not_paired"]
    assert alerts.firing == {"crash_loop"}  # a crash loop ends with a healthy spell (restarts.py), not at once


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


class NewWordHooks(Hooks):
    """A program's health hook that reports a condition no one registered as an alert rule: `battery_low`
    needs a person (an OPERATOR case, as the bridge's `logged_out`)."""

    def __init__(self) -> None:
        self.answers: list[str] = []

    def classifier(self, check: Check) -> probes.Classifier:
        def classify(status: int, body: bytes) -> probes.HealthResult:
            state = json.loads(body).get("state", "")
            self.answers.append(state)
            if status == 200:
                return probes.HealthResult(probes.OK, state)
            if state == "battery_low":
                return probes.HealthResult(probes.OPERATOR, state, "the phone's battery is low")
            return probes.HealthResult(probes.FAILURE, state)
        return classify


new_word_hooks = NewWordHooks()


def warnings_said() -> tuple[list[str], int]:
    said: list[str] = []
    return said, logger.add(lambda message: said.append(str(message)), level="WARNING", format="{message}")


def test_a_word_no_one_registered_is_shown_and_said_once_and_later_answers_still_count(tmp_path: Path) -> None:
    """With the real alert manager: a hook's new word must not raise out of on_probe (the probe task's path)."""
    log = RecoveryLog(tmp_path / "recoveries.jsonl")
    part, events, b = health(tmp_path, b=Bench(log, alerts=AlertManager([], log)))
    said, sink = warnings_said()
    try:
        part.on_probe(PROBE, probes.HealthResult(probes.OK, "connected"), counts=True)
        for _ in range(3):
            part.on_probe(PROBE, probes.HealthResult(probes.OPERATOR, "battery_low", "low"), counts=True)
        assert not part.healthy and part.condition == "battery_low" and part.alerts.firing == {"battery_low"}
        part.on_probe(PROBE, probes.HealthResult(probes.OK, "connected"), counts=True)
    finally:
        logger.remove(sink)
    assert part.healthy and part.condition == "connected" and not part.alerts.firing and events.healthy == 2
    assert len([line for line in said if "'battery_low'" in line and "bridge:main" in line]) == 1


@pytest.mark.slow
def test_a_program_whose_hook_reports_an_unregistered_word_keeps_being_probed(tmp_path: Path) -> None:
    """A real child and the watchdog's own probe task: the word is shown in status and said once in the log,
    and the OK answers after it still come through (the probe task did not die)."""
    state_file = tmp_path / "health.json"
    set_health(state_file, 200, "connected")
    program = replace(health_bridge(tmp_path, state_file), hooks=f"{__name__}:new_word_hooks")
    said, sink = warnings_said()

    async def scenario() -> None:
        async with supervise(write_settings(tmp_path), [program], webhooks=True) as s:
            pid = await s.running("bridge:main")
            watcher = s.watcher("bridge:main")
            set_health(state_file, 503, "battery_low")
            await until(lambda: new_word_hooks.answers[-3:] == ["battery_low"] * 3, 10, "three battery_low answers")
            status = watcher.status()
            assert status["condition"] == "battery_low" and status["alerts"] == ["battery_low"]
            assert not watcher.healthy and watcher.pid == pid
            set_health(state_file, 200, "connected")
            await until(lambda: watcher.healthy and watcher.condition == "connected", 10, "healthy again")
            assert watcher.pid == pid and watcher.status()["alerts"] == []
            assert not s.records("bridge:main", "restart")

    try:
        run(scenario)
    finally:
        logger.remove(sink)
    assert len([line for line in said if "'battery_low'" in line and "bridge:main" in line]) == 1
    assert not [line for line in said if "health probe stopped" in line]
