"""The arbiter's reload under `wa-watchdog run`: `wa-watchdog reload` and SIGHUP read the config again and apply
only the difference. Adding a project starts its monitor and touches nothing else: the bridge keeps its pid,
its standby and its one WhatsApp connection, no disconnect window opens, and every message streamed during the
reload arrives live. An invalid config is refused, said so, and changes nothing."""
from __future__ import annotations

import hashlib
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.bridge_support import rows, sessions, streaming
from tests.bridge_support import inject
from tests.conftest import BASE_CONFIG, GROUP_C, ROOT, Processes, wait_until
from tests.monitor_support import cli, query
from tests.watchdog.test_systemd import UNIT, UserManager
from tests.watchdog.test_system import EXPECTED, status
from watchdog.shared import endpoints
from watchdog.shared.recovery_log import RecoveryLog

WORKER = ROOT / "tests" / "children" / "worker.py"
VELO = f'\n[[projects]]\nname = "velo"\ngroups = ["{GROUP_C}"]\n'


def worker(name: str, label: str) -> str:
    return (f'\n[[programs]]\nname = "{name}"\nargv = ["{sys.executable}", "{WORKER}", "--label", "{label}"]\n'
            f'ready = "notify"\nwatchdog_sec = 2\n')


def healthy(data_dir: Path, names: list[str]) -> dict[str, dict] | None:
    components = status(data_dir)
    return components if all(components.get(name, {}).get("healthy") for name in names) else None


def records(data_dir: Path, event: str) -> list[dict]:
    return [r for r in RecoveryLog(data_dir / "recoveries.jsonl").read() if r["event"] == event]


@pytest.mark.slow
def test_reload_applies_only_the_difference_and_adding_a_project_leaves_the_bridge_alone(write_config,
                                                                                        tmp_path: Path) -> None:
    config = write_config(BASE_CONFIG + worker("keep", "keep") + worker("gone", "gone") + worker("edit", "v1"))
    data_dir = config.parent / "data"
    procs = Processes(config)
    try:
        with open(tmp_path / "watchdog.stderr", "wb") as stderr:
            watchdog = procs.start("run", stdout=stderr, stderr=stderr)
        names = [*EXPECTED, "keep", "gone", "edit"]
        before = wait_until(lambda: (c := healthy(data_dir, names)) and c["bridge:main"]["standby_pid"] and c, 40,
                            message="everything healthy, the bridge with its standby")
        sim_url = endpoints.url(data_dir, "sim")
        connections = sessions(sim_url)["connections"]
        windows = rows(data_dir, "SELECT count(*) FROM disconnect_windows")

        with streaming(sim_url, 300, 3_000_000) as injected:
            wait_until(lambda: len(injected) >= 50, 20, message="the stream under way")
            config.write_text(BASE_CONFIG + VELO + worker("keep", "keep") + worker("edit", "v2"), encoding="utf-8")
            done = cli(config, "reload")
            assert done.returncode == 0, done.stderr
            assert "added monitor:velo" in done.stdout and "removed gone" in done.stdout
            assert "changed edit" in done.stdout
        after = wait_until(lambda: healthy(data_dir, [*EXPECTED, "monitor:velo", "keep", "edit"]), 30,
                           message="the new monitor and the changed program healthy")

        untouched = [*EXPECTED, "keep"]
        assert {n: after[n]["pid"] for n in untouched} == {n: before[n]["pid"] for n in untouched}
        # The standby (it holds nothing) is renewed so that it has read the new file: the next takeover stays warm.
        renewed = wait_until(lambda: (c := healthy(data_dir, ["bridge:main"])) and c["bridge:main"]["standby_pid"]
                             not in (None, before["bridge:main"]["standby_pid"]) and c, 30, message="a renewed standby")
        assert renewed["bridge:main"]["pid"] == before["bridge:main"]["pid"]
        assert after["edit"]["pid"] != before["edit"]["pid"] and "gone" not in after
        assert sessions(sim_url)["connections"] == connections, "the bridge reconnected"
        assert rows(data_dir, "SELECT count(*) FROM disconnect_windows") == windows, "a disconnect window opened"
        stored = wait_until(lambda: (got := dict(rows(data_dir, "SELECT id, source FROM message_meta")))
                            and set(injected) <= set(got) and got, 20, message="every streamed message stored")
        assert {stored[i] for i in injected} == {"live"}, "a message was delayed into the offline queue"

        drop = inject(sim_url, "DR7654321 done", GROUP_C)
        wait_until(lambda: query(data_dir, "SELECT message_id FROM drops WHERE project = 'velo'") == [(drop["id"],)],
                   20, message="the new project's monitor records its drop")

        (reload,) = records(data_dir, "reload")
        assert (reload["added"], reload["removed"], reload["changed"]) == (["monitor:velo"], ["gone"], ["edit"])
        assert reload["sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
        causes = {(r["component"], r["event"]): r.get("cause") for r in RecoveryLog(data_dir / "recoveries.jsonl").read()}
        assert causes[("gone", "stop")] == "reload: removed" and causes[("edit", "stop")] == "reload: changed"
        assert causes[("monitor:velo", "start")] == "reload: added" and causes[("edit", "start")] == "reload: changed"
        table = cli(config, "status")
        assert f"sha256 {reload['sha256'][:12]} loaded" in table.stdout and "(1 reload)" in table.stdout

        # Invalid: the command says why and exits 2; SIGHUP keeps the old config and the log says why.
        good = config.read_text(encoding="utf-8")
        config.write_text(good + '\n[[programs]]\nname = "web"\nargv = []\n', encoding="utf-8")
        refused = cli(config, "reload")
        assert refused.returncode == 2 and "programs.web.argv" in refused.stderr and "Traceback" not in refused.stderr
        os.kill(watchdog.pid, signal.SIGHUP)
        (_, invalid) = wait_until(lambda: len(found := records(data_dir, "reload")) == 2 and found, 10,
                                  message="the refused reload recorded")
        assert invalid["cause"] == "SIGHUP" and "programs.web.argv" in invalid["message"]
        assert "old configuration stays" in invalid["message"]
        now = healthy(data_dir, [*EXPECTED, "monitor:velo", "keep", "edit"])
        assert now is not None and {n: now[n]["pid"] for n in now} == {n: after[n]["pid"] for n in after}
    finally:
        procs.stop_all()
    assert watchdog.returncode == 0


@pytest.mark.slow
def test_systemctl_reload_is_a_sighup_that_applies_the_config_without_a_restart(
        manager: UserManager, config_path: Path, data_dir: Path) -> None:
    """The shipped unit's ExecReload= under a real systemd user manager: the watchdog says RELOADING=1 and
    READY=1 again, applies the new project, and systemd counts no restart."""
    unit = manager.install(UNIT, config_path)
    with manager.explained():
        manager.start()
        main_pid = manager.start_until_active(unit)
        before = wait_until(lambda: healthy(data_dir, EXPECTED), 40, message="the system healthy under systemd")
        config_path.write_text(BASE_CONFIG + VELO, encoding="utf-8")
        manager.systemctl("reload", unit)
        (reload,) = wait_until(lambda: records(data_dir, "reload"), 20, message="the reload recorded")
        assert reload["cause"] == "SIGHUP" and reload["added"] == ["monitor:velo"]
        after = wait_until(lambda: healthy(data_dir, [*EXPECTED, "monitor:velo"]), 30, message="the new monitor")
        assert after["bridge:main"]["pid"] == before["bridge:main"]["pid"]
        shown = manager.show(unit, "ActiveState", "MainPID", "NRestarts")
        assert shown == {"ActiveState": "active", "MainPID": str(main_pid), "NRestarts": "0"}, shown
        manager.own(*[c["pid"] for c in after.values() if c["pid"]])
        assert manager.stop_unit(unit)["Result"] == "success"


@pytest.mark.slow
def test_a_program_after_a_bridge_in_a_whatsapp_outage_starts_anyway_once_the_outage_is_known(tmp_path: Path) -> None:
    """`after` waits for healthy, or for a dependency that is up while its upstream is away (waiting would not help)."""
    from tests.watchdog.core.test_supervision import health_bridge, run, set_health, supervise, worker, write_settings
    state_file = tmp_path / "health.json"
    set_health(state_file, 503, "disconnected", reason="WhatsApp unreachable")

    async def scenario() -> None:
        async with supervise(write_settings(tmp_path), [health_bridge(tmp_path, state_file),
                                                        worker("monitor:a", after=("bridge:main",))]) as s:
            await s.running("monitor:a", timeout=20)
            bridge = s.watcher("bridge:main")
            assert not bridge.healthy and bridge.condition == "disconnected" and bridge.settled
    run(scenario)
