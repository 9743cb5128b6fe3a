"""The whole system under `wa-watchdog run` (conftest BASE_CONFIG): comes up, survives kill -9, stops with 0."""
from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.conftest import BASE_CONFIG, Processes, wait_until
from watchdog.shared import endpoints
from watchdog.shared.recovery_log import RecoveryLog

EXPECTED = ["sim", "bridge:main", "monitor:lawley", "monitor:mohadin"]


def status(data_dir: Path) -> dict[str, dict]:
    url = endpoints.url(data_dir, "watchdog", "control")
    if url is None:
        return {}
    try:
        with urllib.request.urlopen(url + "/status", timeout=5) as response:
            return {c["name"]: c for c in json.load(response)}
    except OSError:  # a killed watchdog's stale run/watchdog.json, until the next one publishes
        return {}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.slow
def test_full_system_comes_up_recovers_a_killed_bridge_and_stops_cleanly(procs: Processes, data_dir: Path,
                                                                        tmp_path: Path) -> None:
    with open(tmp_path / "watchdog.stderr", "wb") as stderr:
        watchdog = procs.start("run", stdout=stderr, stderr=stderr)
    expected = EXPECTED

    def up() -> dict[str, dict] | None:
        components = status(data_dir)
        return components if all(components.get(name, {}).get("healthy") for name in expected) else None

    components = wait_until(up, 30, message=f"{expected} healthy")
    bridge = components["bridge:main"]
    assert bridge["endpoints"]["api"].startswith("http://127.0.0.1:")
    old = bridge["pid"]

    os.kill(old, signal.SIGKILL)
    components = wait_until(lambda: (c := up()) and c["bridge:main"]["pid"] != old and c, 30,
                            message="the bridge healthy again with a new pid")
    new = components["bridge:main"]["pid"]
    log = RecoveryLog(data_dir / "recoveries.jsonl")
    records = [r for r in log.read() if r["component"] == "bridge:main" and r.get("pid") in (old, new)]
    events = {r["event"]: r for r in records}
    assert events["exit"]["cause"] == "SIGKILL" and events["exit"]["pid"] == old
    assert events["restart"]["new_pid"] == new and events["restart"]["delay_ms"] == 0
    assert events["healthy"]["pid"] == new and events["healthy"]["downtime_ms"] < 10_000
    assert components["bridge:main"]["restarts"] == 1
    with urllib.request.urlopen(endpoints.url(data_dir, "watchdog", "control") + "/metrics", timeout=5) as response:
        metrics = response.read().decode()
    assert 'wa_watchdog_restarts_total{cause="exit",component="bridge:main"} 1.0' in metrics
    assert 'wa_watchdog_recovery_seconds_count{component="bridge:main"} 1.0' in metrics
    assert 'wa_watchdog_component_healthy{component="monitor:lawley"} 1.0' in metrics

    pids = [c["pid"] for c in components.values() if c["pid"]]
    watchdog.send_signal(signal.SIGTERM)
    assert watchdog.wait(timeout=30) == 0
    assert not [pid for pid in pids if alive(pid)]
    assert [r["event"] for r in log.read()][-1] == "stop"
    assert (data_dir / "logs" / "bridge-main.log").stat().st_size > 0


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # an orphan nobody reaped is still gone
    except psutil.NoSuchProcess:
        return True


@pytest.mark.slow
def test_a_new_watchdog_stops_what_a_killed_one_left_running_before_starting_its_own(procs: Processes,
                                                                                     data_dir: Path,
                                                                                     tmp_path: Path) -> None:
    with open(tmp_path / "first.stderr", "wb") as stderr:
        first = procs.start("run", stdout=stderr, stderr=stderr)
    expected = EXPECTED

    def up() -> dict[str, dict] | None:
        components = status(data_dir)
        return components if all(components.get(name, {}).get("healthy") for name in expected) else None

    first_system = wait_until(lambda: (c := up()) and c["bridge:main"]["standby_pid"] and c, 30,
                              message="the first watchdog's system, with the bridge's standby")
    orphans = {name: c["pid"] for name, c in first_system.items() if name in expected}
    orphans["bridge:main#standby"] = first_system["bridge:main"]["standby_pid"]
    first.kill()  # the watchdog dies; its children (own process groups) keep running
    first.wait()
    try:
        assert not [pid for pid in orphans.values() if gone(pid)]
        with open(tmp_path / "second.stderr", "wb") as stderr:
            procs.start("run", stdout=stderr, stderr=stderr)
        components = wait_until(lambda: (c := up()) and all(c[n]["pid"] != orphans[n] for n in expected)
                                and c["bridge:main"]["standby_pid"] and c,
                                30, message="the second watchdog's own system healthy, with its own standby")
        assert all(gone(pid) for pid in orphans.values())
        assert components["bridge:main"]["standby_pid"] not in orphans.values()
    finally:  # whatever failed, leave no orphan of the first watchdog behind
        for pid in orphans.values():
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
    stops = [r for r in RecoveryLog(data_dir / "recoveries.jsonl").read()
             if r["event"] == "stop" and "earlier run" in r.get("cause", "")]
    # The standby first: stopped after the session's owner, it would have taken the session over.
    assert [r["pid"] for r in stops if r["component"] == "bridge:main"] == [orphans["bridge:main#standby"],
                                                                           orphans["bridge:main"]]
    stopped = {r["component"]: r for r in stops}
    assert {name: stopped[name]["pid"] for name in expected} == {name: orphans[name] for name in expected}
    assert len({c["pid"] for c in components.values()}) == len(components)


@pytest.mark.slow
def test_a_bridge_with_an_api_token_is_probed_with_it_and_stays_healthy(write_config, procs: Processes,
                                                                       data_dir: Path, tmp_path: Path) -> None:
    config = write_config(BASE_CONFIG.replace('api_port = 0', 'api_port = 0\napi_token = "s3cret"', 1))
    with open(tmp_path / "watchdog.stderr", "wb") as stderr:
        procs.start("run", "--config", str(config), stdout=stderr, stderr=stderr)
    components = wait_until(lambda: (c := status(data_dir)) and all(c.get(n, {}).get("healthy") for n in EXPECTED)
                            and c, 30, message="every component healthy, the bridge probed with its token")
    assert components["bridge:main"]["restarts"] == 0
    request = urllib.request.Request(components["bridge:main"]["endpoints"]["api"] + "/api/health")
    try:
        urllib.request.urlopen(request, timeout=5)
        raise AssertionError("the bridge answered without its token")
    except urllib.error.HTTPError as error:
        assert error.code == 401
