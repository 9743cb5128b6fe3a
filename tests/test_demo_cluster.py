"""`scripts/demo --cluster` (README): the smallest cluster comes up (PostgreSQL, one simulator, two hosts),
records a drop posted once, acknowledges it once, `status` shows both nodes and the lease, and Ctrl-C (SIGTERM)
ends everything it started."""
from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import psutil
import psycopg
import pytest

from scripts.benchmarks.system_run import group_jid, http
from tests.conftest import ROOT, wait_until
from tests.monitor_support import cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_the_cluster_demo_comes_up_records_a_drop_once_and_ends_what_it_started(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        demo = subprocess.Popen([str(ROOT / "scripts/demo"), "--cluster", "--dir", str(work)], cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: demo.poll() is not None or (work / "cluster.json").exists(), timeout=240,
                   message="the cluster demo to come up")
        assert demo.poll() is None, log.read_text()
        state = json.loads((work / "cluster.json").read_text())
        assert "the cluster is up" in log.read_text()
        started = [psutil.Process(pid) for pid in state["pids"].values()]
        started += [child for process in list(started) for child in process.children(recursive=True)]

        http("POST", f"{state['sim']}/sim/inject",
             {"chat_jid": group_jid(1), "sender_jid": "27710000001@s.whatsapp.net", "text": "DR1734150 installed"})

        def recorded() -> tuple[list, list]:
            with psycopg.connect(state["database"]) as conn:
                return (conn.execute("SELECT drop_number FROM wa_watchdog.drops").fetchall(),
                        conn.execute("SELECT status FROM wa_watchdog.feedback").fetchall())
        wait_until(lambda: recorded() == ([("DR1734150",)], [("sent",)]), timeout=60,
                   message="the drop recorded once and acknowledged once")
        sent = http("GET", f"{state['sim']}/sim/sent")
        assert len(sent) == 1, sent  # the one acknowledgement reached the group once

        status = cli(Path(state["hosts"]["vps-b"]), "status", "--json")
        assert status.returncode == 0, status.stderr
        cluster = json.loads(status.stdout)["cluster"]
        assert {n["node"] for n in cluster["nodes"]} == {"vps-a", "vps-b"}
        assert {lease["holder"] for lease in cluster["leases"]} <= {"vps-a", "vps-b"} and cluster["leases"]
        text = cli(Path(state["hosts"]["vps-a"]), "status").stdout
        assert "cluster (this host: vps-a" in text and "SENDER LEASE" in text
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)  # what Ctrl-C sends: the demo stops what it started
    assert demo.wait(timeout=120) == 0, log.read_text()
    wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in started), timeout=30,
               message="every process the demo started ended")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(state["database"], connect_timeout=3)
