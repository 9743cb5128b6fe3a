"""Alert webhooks against a real aiohttp receiver on 127.0.0.1."""
from __future__ import annotations

import asyncio
import socket
import time
from collections import defaultdict
from pathlib import Path

import pytest
from aiohttp import web
from loguru import logger

import bridge.alert_rules
import monitors.alert_rules
from watchdog.shared.alerts import AlertManager
from watchdog.control.console.render import what_to_do
from watchdog.control.console.view import Row
from watchdog.shared import alert_rules
from watchdog.shared.config import AlertConfig
from watchdog.shared.recovery_log import RecoveryLog

FAST = {"attempts": 4, "backoff_initial": 0.01, "backoff_max": 0.05, "timeout": 2.0}


class Receiver:
    """A webhook receiver: records each POSTed JSON body per path; can answer errors or never answer."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[dict]] = defaultdict(list)
        self.attempts: dict[str, int] = defaultdict(int)
        self.failures: dict[str, list[int]] = defaultdict(list)  # path -> statuses to answer first
        self.hang_paths: set[str] = set()
        self.changed = asyncio.Condition()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.path
        self.attempts[path] += 1
        if path in self.hang_paths:
            await asyncio.Event().wait()
        if self.failures[path]:
            return web.Response(status=self.failures[path].pop(0), text="receiver trouble")
        self.bodies[path].append(await request.json())
        async with self.changed:
            self.changed.notify_all()
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def wait_for(self, path: str, count: int, timeout: float = 5.0) -> list[dict]:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: len(self.bodies[path]) >= count), timeout)
        return self.bodies[path]


def run(scenario) -> None:
    """Run one async scenario with a started receiver."""
    async def main() -> None:
        receiver = Receiver()
        await receiver.start()
        try:
            await scenario(receiver)
        finally:
            await receiver.stop()
    asyncio.run(main())


@pytest.fixture
def log(tmp_path: Path) -> RecoveryLog:
    return RecoveryLog(tmp_path / "recoveries.jsonl")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_each_format_posts_its_shape(log: RecoveryLog) -> None:
    async def scenario(rx: Receiver) -> None:
        manager = AlertManager([AlertConfig(url=f"{rx.url}/slack", format="slack"),
                                AlertConfig(url=f"{rx.url}/discord", format="discord"),
                                AlertConfig(url=f"{rx.url}/json", format="json", disconnect_threshold=60)], log, **FAST)
        manager.fire("hang", "bridge:main", "no heartbeat for 3.0 s")
        manager.fire("disconnect", "bridge:main", "WhatsApp closed the connection", duration_s=75.0)
        (slack,) = await rx.wait_for("/slack", 1)
        (discord,) = await rx.wait_for("/discord", 1)
        hang, disconnect = sorted(await rx.wait_for("/json", 2), key=lambda b: b["rule"] != "hang")
        await manager.close()

        assert set(slack) == {"text"} and "bridge:main" in slack["text"] and "no heartbeat for 3.0 s" in slack["text"]
        assert "FIRING" in slack["text"]
        assert set(discord) == {"content"} and discord["content"] == slack["text"]
        assert {k: hang[k] for k in ("status", "rule", "component", "summary")} == {
            "status": "firing", "rule": "hang", "component": "bridge:main", "summary": "no heartbeat for 3.0 s"}
        assert "duration_s" not in hang and hang["time"].endswith("+00:00")
        assert disconnect["rule"] == "disconnect" and disconnect["duration_s"] == 75.0
        # slack/discord use the default disconnect threshold (120 s): 75 s is not enough for them
        assert len(rx.bodies["/slack"]) == len(rx.bodies["/discord"]) == 1
    run(scenario)


def test_an_entry_gets_only_the_rules_it_lists(log: RecoveryLog) -> None:
    async def scenario(rx: Receiver) -> None:
        manager = AlertManager([AlertConfig(url=f"{rx.url}/loops", rules=["crash_loop"]),
                                AlertConfig(url=f"{rx.url}/all")], log, **FAST)
        manager.fire("hang", "bridge:main", "no heartbeat")
        manager.fire("crash_loop", "monitor:lawley", "5 exits in 60 s")
        manager.fire("logged_out", "bridge:main", "re-pair the phone")
        await manager.close()
        assert [b["rule"] for b in rx.bodies["/loops"]] == ["crash_loop"]
        assert sorted(b["rule"] for b in rx.bodies["/all"]) == ["crash_loop", "hang", "logged_out"]
    run(scenario)


def test_disconnect_alerts_only_past_each_entrys_threshold(log: RecoveryLog) -> None:
    async def scenario(rx: Receiver) -> None:
        manager = AlertManager([AlertConfig(url=f"{rx.url}/short", disconnect_threshold=60),
                                AlertConfig(url=f"{rx.url}/long", disconnect_threshold=300)], log, **FAST)
        manager.fire("disconnect", "bridge:main", "offline", duration_s=10)
        manager.fire("disconnect", "bridge:main", "offline")  # no duration: cannot be past any threshold
        manager.fire("disconnect", "bridge:main", "offline", duration_s=61)
        manager.fire("disconnect", "bridge:main", "offline", duration_s=301)
        await manager.close()
        assert [b["duration_s"] for b in rx.bodies["/short"]] == [61]  # 301 is a repeat for this entry
        assert [b["duration_s"] for b in rx.bodies["/long"]] == [301]
    run(scenario)


def test_repeats_are_suppressed_within_the_repeat_interval(log: RecoveryLog) -> None:
    async def scenario(rx: Receiver) -> None:
        manager = AlertManager([AlertConfig(url=f"{rx.url}/hourly", repeat_interval=3600),
                                AlertConfig(url=f"{rx.url}/always", repeat_interval=0)], log, **FAST)
        for _ in range(3):
            manager.fire("hang", "bridge:main", "no heartbeat")
        manager.fire("hang", "monitor:lawley", "no heartbeat")  # another component is another alert
        await manager.close()
        assert sorted(b["component"] for b in rx.bodies["/hourly"]) == ["bridge:main", "monitor:lawley"]
        assert len(rx.bodies["/always"]) == 4
    run(scenario)


def test_resolved_follows_only_a_sent_firing(log: RecoveryLog) -> None:
    async def scenario(rx: Receiver) -> None:
        manager = AlertManager([AlertConfig(url=f"{rx.url}/hooks", format="json")], log, **FAST)
        manager.resolve("stream_replaced", "bridge:main", "session back")  # never fired: nothing
        manager.fire("stream_replaced", "bridge:main", "another device took the session")
        await rx.wait_for("/hooks", 1)
        manager.resolve("stream_replaced", "bridge:main", "session back")
        manager.resolve("stream_replaced", "bridge:main", "session back")  # already resolved: nothing
        await manager.close()
        assert [(b["status"], b["summary"]) for b in rx.bodies["/hooks"]] == [
            ("firing", "another device took the session"), ("resolved", "session back")]
    run(scenario)


def test_a_flapping_component_pages_once_per_repeat_interval(log: RecoveryLog) -> None:
    async def scenario(rx: Receiver) -> None:
        manager = AlertManager([AlertConfig(url=f"{rx.url}/hourly", repeat_interval=3600),
                                AlertConfig(url=f"{rx.url}/always", repeat_interval=0)], log, **FAST)
        for n in range(3):  # hang, healthy again, hang again...
            manager.fire("hang", "bridge:main", f"hang {n}")
            manager.resolve("hang", "bridge:main", f"healthy {n}")
        await manager.close()
        # each delivery is its own task: arrival order is not sending order
        assert sorted((b["status"], b["summary"]) for b in rx.bodies["/hourly"]) == [
            ("firing", "hang 0"), ("resolved", "healthy 0")]
        assert sorted(b["summary"] for b in rx.bodies["/always"]) == [
            "hang 0", "hang 1", "hang 2", "healthy 0", "healthy 1", "healthy 2"]
    run(scenario)


def test_retries_after_a_500_until_delivered_but_not_after_a_400(log: RecoveryLog) -> None:
    async def scenario(rx: Receiver) -> None:
        rx.failures["/flaky"] = [500, 503]
        rx.failures["/wrong"] = [400]
        manager = AlertManager([AlertConfig(url=f"{rx.url}/flaky"), AlertConfig(url=f"{rx.url}/wrong")], log, **FAST)
        manager.fire("crash_loop", "bridge:main", "5 exits in 60 s")
        (body,) = await rx.wait_for("/flaky", 1)
        await manager.close()
        assert body["rule"] == "crash_loop"
        assert rx.attempts["/flaky"] == 3
        assert rx.attempts["/wrong"] == 1 and rx.bodies["/wrong"] == []
    run(scenario)


@pytest.mark.slow
def test_a_dead_or_silent_webhook_neither_blocks_nor_crashes(log: RecoveryLog) -> None:
    errors: list[str] = []
    sink = logger.add(lambda message: errors.append(str(message)), level="ERROR")

    async def scenario(rx: Receiver) -> None:
        rx.hang_paths.add("/silent")
        manager = AlertManager([AlertConfig(url=f"http://127.0.0.1:{closed_port()}/dead"),
                                AlertConfig(url=f"{rx.url}/silent"),
                                AlertConfig(url=f"{rx.url}/live")], log, **FAST)
        started = time.monotonic()
        manager.fire("config_failed", "monitor:lawley", "projects[0].pattern is not a valid regex")
        assert time.monotonic() - started < 0.1  # fire() only schedules
        assert rx.attempts["/silent"] == 0 and rx.bodies["/live"] == []
        await rx.wait_for("/live", 1)  # the live webhook is served while the others fail or hang
        started = time.monotonic()
        await manager.close(timeout=0.5)
        assert time.monotonic() - started < 2.0
        assert rx.attempts["/silent"] == 1

    try:
        run(scenario)
    finally:
        logger.remove(sink)
    assert any("not delivered" in e and "http://127.0.0.1:" in e for e in errors), errors
    assert not any("/dead" in e for e in errors), "a webhook URL's path (its secret) was logged"


def test_each_sent_alert_is_in_the_recovery_log(log: RecoveryLog) -> None:
    async def scenario(rx: Receiver) -> None:
        manager = AlertManager([AlertConfig(url=f"{rx.url}/a"), AlertConfig(url=f"{rx.url}/b")], log, **FAST)
        manager.fire("hang", "bridge:main", "no heartbeat for 3.0 s")
        manager.fire("hang", "bridge:main", "no heartbeat for 3.0 s")  # suppressed: not logged again
        manager.resolve("hang", "bridge:main", "healthy again")
        manager.fire("logged_out", "bridge:main", "re-pair")  # two webhooks, one record
        await manager.close()

    run(scenario)
    records = [(r["component"], r["event"], r["rule"], r["status"], r["summary"]) for r in log.read()]
    assert records == [("bridge:main", "alert", "hang", "firing", "no heartbeat for 3.0 s"),
                       ("bridge:main", "alert", "hang", "resolved", "healthy again"),
                       ("bridge:main", "alert", "logged_out", "firing", "re-pair")]


def test_nothing_is_logged_when_no_entry_wants_the_alert(log: RecoveryLog) -> None:
    async def scenario(rx: Receiver) -> None:
        manager = AlertManager([AlertConfig(url=f"{rx.url}/a", rules=["hang"])], log, **FAST)
        manager.fire("crash_loop", "bridge:main", "5 exits")
        await manager.close()
        assert rx.attempts["/a"] == 0

    run(scenario)
    assert list(log.read()) == []


def test_a_word_no_one_registered_is_logged_once_and_alerted_nowhere_and_other_rules_still_go(
        log: RecoveryLog) -> None:
    """A health hook's new word fired as a rule (program_alerts.py): never an error (that ended the probe)."""
    warnings: list[str] = []
    sink = logger.add(lambda message: warnings.append(str(message)), level="WARNING", format="{message}")

    async def scenario(rx: Receiver) -> None:
        manager = AlertManager([AlertConfig(url=f"{rx.url}/all")], log, **FAST)
        manager.fire("battery_low", "bridge:main", "bridge:main: battery low; an operator is needed")
        manager.fire("battery_low", "bridge:main", "again")
        manager.resolve("battery_low", "bridge:main", "bridge:main is connected again")
        manager.fire("hang", "bridge:main", "no heartbeat for 5.0 s")
        (body,) = await rx.wait_for("/all", 1)
        await manager.close()
        assert body["rule"] == "hang" and rx.attempts["/all"] == 1

    try:
        run(scenario)
    finally:
        logger.remove(sink)
    said = [w for w in warnings if "battery_low" in w]
    assert len(said) == 1 and "bridge:main" in said[0] and "not a registered alert rule" in said[0]
    assert [r["rule"] for r in log.read()] == ["hang"]


def test_each_package_registers_its_own_rules_and_config_checks_against_them() -> None:
    assert {bridge.alert_rules.DISCONNECT, bridge.alert_rules.STREAM_REPLACED, bridge.alert_rules.LOGGED_OUT,
            bridge.alert_rules.NOT_PAIRED, bridge.alert_rules.NOT_IN_GROUP, bridge.alert_rules.TEMPORARY_BAN,
            monitors.alert_rules.WEBHOOK_DEAD, monitors.alert_rules.LEASE_TAKEN_OVER, monitors.alert_rules.NODE_SILENT,
            monitors.alert_rules.FEEDBACK_FAILOVER, monitors.alert_rules.FEEDBACK_UNKNOWN,
            alert_rules.CRASH_LOOP, alert_rules.HANG, alert_rules.CONFIG_FAILED, alert_rules.NEEDS_OPERATOR,
            alert_rules.OUTAGE} == set(alert_rules.known())
    assert AlertConfig(url="http://127.0.0.1/").rules == list(alert_rules.known())
    with pytest.raises(ValueError, match="'hang' is registered twice"):
        alert_rules.register("hang", "again", "nothing")
    assert alert_rules.get("hang").title == "hung process restarted"


def test_every_rule_says_what_to_do_and_its_runbook_anchor_exists() -> None:
    operations = (Path(__file__).parents[3] / "docs/OPERATIONS.md").read_text(encoding="utf-8")
    for name in alert_rules.known():
        rule = alert_rules.get(name)
        assert rule is not None and rule.title and rule.action, name
        path, anchor = alert_rules.runbook_ref(name).split("#")
        assert path == "docs/OPERATIONS.md" and f'<a id="{anchor}"></a>`{name}`' in operations, name
    assert alert_rules.title("battery_low") == "battery low"  # a word no one registered reads as itself


def test_the_console_says_what_to_do_from_the_registration_and_points_a_new_word_to_its_log() -> None:
    html = what_to_do([Row({"name": "bridge:main", "alerts": ["logged_out", "battery_low"]}, 0),
                       Row({"name": "monitor:velo", "alerts": ["logged_out"]}, 0)])
    assert html.count('data-rule="logged_out"') == 1 and html.count('data-rule="battery_low"') == 1
    assert "<b>logged out: re-pairing needed</b>: re-pair as the service user" in html
    assert "docs/OPERATIONS.md#alert-logged-out" in html and "#alert-battery-low" not in html
    assert "<b>battery low</b>: not a registered alert rule" in html and "<code>wa-watchdog logs COMPONENT</code>" in html
