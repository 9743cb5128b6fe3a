"""[[programs]]: the schema and its errors, the built-ins as programs, and a web app declared only in config
supervised beside the real system (readiness by HTTP, restart after a kill, a hang caught by its liveness check,
started after the bridge and stopped before it)."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BASE_CONFIG, ROOT, Processes, wait_until
from tests.watchdog.test_system import EXPECTED, status
from watchdog.components import all_programs, builtin_programs, load
from watchdog.shared.config import ConfigError
from watchdog.shared.programs import Check, Program, diff
from watchdog.shared.recovery_log import RecoveryLog

WEB_APP = ROOT / "tests" / "children" / "web_app.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def web_program(port: int, hang_file: Path, listen_after: float = 0.0) -> str:
    return f"""
[[programs]]
name = "web"
argv = ["{sys.executable}", "{WEB_APP}", "--port", "{port}", "--hang-file", "{hang_file}",
        "--listen-after", "{listen_after}"]
after = ["bridge:main"]
ready = {{ http = "http://127.0.0.1:{port}/", status = 200 }}
env = {{ NODE_ENV = "production" }}
stop_timeout = 5

[[programs.liveness]]
http = "http://127.0.0.1:{port}/healthz"
period = 0.2
timeout = 0.5
failure_threshold = 3
"""


def test_a_declared_program_is_parsed_with_its_checks_and_defaults(write_config) -> None:
    config = load(write_config(BASE_CONFIG + web_program(8000, Path("/tmp/hang"))))
    (web,) = config.programs
    assert web.argv[0] == sys.executable and web.after == ("bridge:main",) and web.env == (("NODE_ENV", "production"),)
    assert web.ready == Check("http", url="http://127.0.0.1:8000/")
    assert web.liveness == (Check("http", url="http://127.0.0.1:8000/healthz", period=0.2, timeout=0.5),)
    assert (web.restart, web.stop_signal, web.no_restart_exit_codes, web.watchdog_sec) == ("always", "SIGTERM", (), 0)
    names = [p.name for p in all_programs(config)]
    assert names == ["sim", "bridge:main", "monitor:lawley", "monitor:mohadin", "web"]


def test_built_ins_are_programs_of_the_same_schema(write_config) -> None:
    config = load(write_config())
    sim, bridge, lawley, _ = builtin_programs(config)
    assert bridge.after == ("sim",) and lawley.after == ("bridge:main",) and sim.after == ()
    assert bridge.ready.kind == "http" and bridge.liveness == (bridge.ready,) and bridge.hooks
    assert bridge.pidfile == config.accounts["main"].session_dir / "session.lock" and bridge.standby
    assert lawley.ready == Check("notify") and lawley.group == "monitor" and lawley.no_restart_exit_codes == (2, 4)


def test_projects_share_monitor_processes_when_configured(write_config) -> None:
    third = '[[projects]]\nname = "third"\ngroups = ["120363000000000003@g.us"]\n'
    config = load(write_config(BASE_CONFIG + third + "\n[monitors]\nprojects_per_process = 2\n"))
    monitors = [p for p in builtin_programs(config) if p.group == "monitor"]
    assert [p.name for p in monitors] == ["monitor:lawley..mohadin", "monitor:third"]
    assert monitors[0].argv[-4:] == ("--project", "lawley", "--project", "mohadin")
    assert monitors[0].leftover_signature == (("monitor",), ("--project", "lawley"), ("--project", "mohadin"))
    alone = {p.name: p for p in builtin_programs(load(write_config(BASE_CONFIG + third)))}
    assert {"monitor:lawley", "monitor:mohadin", "monitor:third"} <= set(alone)
    for wrong in ("0", '"many"', "1.5"):
        with pytest.raises(ConfigError, match=": monitors.projects_per_process: "):
            load(write_config(BASE_CONFIG + f"\n[monitors]\nprojects_per_process = {wrong}\n"))


@pytest.mark.parametrize(("program", "key"), [
    ('name = "web"\nargv = []', "programs.web.argv"),
    ('name = "web"\nargv = ["x"]\nrestart = "sometimes"', "programs.web.restart"),
    ('name = "web"\nargv = ["x"]\nstop_signal = "SIGNOPE"', "programs.web.stop_signal"),
    ('name = "web"\nargv = ["x"]\nafter = ["bridge:other"]', "programs.web.after[0]"),
    ('name = "web"\nargv = ["x"]\nready = { http = "ftp://x" }', "programs.web.ready.http"),
    ('name = "web"\nargv = ["x"]\nready = { tcp = "127.0.0.1" }', "programs.web.ready.tcp"),
    ('name = "web"\nargv = ["x"]\nready = "soon"', "programs.web.ready"),
    ('name = "web"\nargv = ["x"]\nready = { started = 1, period = 0 }', "programs.web.ready.period"),
    ('name = "web"\nargv = ["x"]\nwatchdog_sec = -1', "programs.web.watchdog_sec"),
    ('name = "web"\nargv = ["x"]\nno_restart_exit_codes = [300]', "programs.web.no_restart_exit_codes"),
    ('name = "web"\nargv = ["x"]\ncolour = "red"', "programs.web.colour"),
    ('name = "web"\nargv = ["x"]\n[[programs.liveness]]\nstarted = 1', "programs.web.liveness[0]"),
    ('name = "bridge:main"\nargv = ["x"]', "programs.bridge:main.name"),
    ('name = "a"\nargv = ["x"]\nafter = ["b"]\n[[programs]]\nname = "b"\nargv = ["x"]\nafter = ["a"]', "programs.a.after"),
])
def test_a_bad_program_is_a_config_error_naming_the_program_and_key(write_config, program: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f": {re.escape(key)}: "):
        load(write_config(BASE_CONFIG + "\n[[programs]]\n" + program + "\n"))


def test_the_cli_exits_2_naming_the_key(write_config) -> None:
    config = write_config(BASE_CONFIG + '\n[[programs]]\nname = "web"\nargv = ["x"]\nrestart = "sometimes"\n')
    done = subprocess.run([sys.executable, "-m", "watchdog.cli", "status", "--config", str(config)], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "programs.web.restart" in done.stderr and "Traceback" not in done.stderr


def test_diff_names_what_a_reload_starts_stops_and_restarts() -> None:
    a, b, c = Program("a", ("x",)), Program("b", ("x",)), Program("c", ("x",))
    changes = diff([a, b], [Program("a", ("x",)), Program("b", ("y",)), c])
    assert (changes.added, changes.removed, changes.changed) == ([c], [], [Program("b", ("y",))])
    assert changes.summary() == "added c; changed b"
    assert not diff([a], [Program("a", ("x",))])


def running_pids(data_dir: Path, names: list[str]) -> dict[str, int] | None:
    components = status(data_dir)
    if all(components.get(name, {}).get("healthy") for name in names):
        return {name: components[name]["pid"] for name in names}
    return None


def records(data_dir: Path, component: str, event: str) -> list[dict]:
    return [r for r in RecoveryLog(data_dir / "recoveries.jsonl").read()
            if r["component"] == component and r["event"] == event]


@pytest.mark.slow
def test_a_web_app_declared_only_in_config_is_supervised_beside_the_system(write_config, tmp_path: Path) -> None:
    port, hang = free_port(), tmp_path / "hang"
    config = write_config(BASE_CONFIG + web_program(port, hang, listen_after=1.0))
    data_dir = config.parent / "data"
    procs = Processes(config)
    stderr_path = tmp_path / "watchdog.stderr"
    try:
        with open(stderr_path, "wb") as stderr:
            watchdog = procs.start("run", stdout=stderr, stderr=stderr)

        def web_healthy_only_when_listening() -> bool:
            web = status(data_dir).get("web", {})
            if web.get("healthy"):  # healthy implies it answered HTTP, so it accepts connections now
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return bool(web.get("healthy"))
        wait_until(web_healthy_only_when_listening, 40, message="the web app healthy")
        pids = wait_until(lambda: running_pids(data_dir, [*EXPECTED, "web"]), 30, message="everything healthy")
        log = stderr_path.read_text()
        assert log.index("bridge:main running") < log.index("web started"), "the web app started before the bridge"
        assert log.index("web started") < log.index("web app pid") < log.index("web running")

        os.kill(pids["web"], signal.SIGKILL)
        after_kill = wait_until(lambda: (p := running_pids(data_dir, ["web"])) and p["web"] != pids["web"] and p,
                                20, message="the web app restarted")
        (restart,) = records(data_dir, "web", "restart")
        assert restart["pid"] == pids["web"] and restart["cause"] == "SIGKILL"

        hang.touch()  # its one request thread blocks: alive, not stopped, never answering
        (unhealthy,) = wait_until(lambda: records(data_dir, "web", "unhealthy"), 20, message="the hang caught")
        hang.unlink()
        assert unhealthy["pid"] == after_kill["web"] and "GET http://127.0.0.1" in unhealthy["cause"]
        assert "timeout" in unhealthy["cause"] and "3 times" in unhealthy["cause"]
        wait_until(lambda: (p := running_pids(data_dir, ["web"])) and p["web"] != after_kill["web"], 20,
                   message="the hung web app replaced")
        assert status(data_dir)["bridge:main"]["pid"] == pids["bridge:main"]  # nothing else was touched
    finally:
        procs.stop_all()
    assert watchdog.returncode == 0
    stops = {r["component"]: r["time"] for r in RecoveryLog(data_dir / "recoveries.jsonl").read()
             if r["event"] == "stop" and r.get("cause") == "shutdown"}
    assert stops["web"] < stops["bridge:main"] < stops["sim"], stops
