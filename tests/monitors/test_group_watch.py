"""A project that follows a group its account is not in: said by check, status, the bridge's health, the monitor
and an alert, end to end with the simulator (whose membership is the groups that list the number)."""
from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import BASE_CONFIG, GROUP_A, GROUP_B, GROUP_C, Processes, wait_until
from tests.monitor_support import cli
from tests.watchdog.test_system import status

NOT_IN = f"account main is not in group {GROUP_C} (project velo-test)"


class AlertInbox:
    """A JSON alert webhook on 127.0.0.1: every POSTed body, in order."""

    def __init__(self) -> None:
        bodies: list[dict] = []
        self.bodies = bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def inbox() -> Iterator[AlertInbox]:
    receiver = AlertInbox()
    yield receiver
    receiver.close()


def _config(alert_url: str) -> str:
    """main (27710000000) is listed in groups A and B, not in C: velo-test follows C."""
    text = BASE_CONFIG.replace('participants = ["27710000001", "27710000002"]',
                               'participants = ["27710000000", "27710000001", "27710000002"]')
    text = text.replace('participants = ["27710000003"]', 'participants = ["27710000000", "27710000003"]')
    return text + (f'\n[[projects]]\nname = "velo-test"\ngroups = ["{GROUP_C}"]\n\n'
                   f'[[alerts]]\nurl = "{alert_url}"\nformat = "json"\nrules = ["not_in_group"]\n')


@pytest.mark.slow
def test_a_group_the_account_is_not_in_is_named_everywhere(write_config, inbox: AlertInbox, tmp_path: Path) -> None:
    config = write_config(_config(inbox.url))
    config.chmod(0o640)
    data = tmp_path / "data"
    procs = Processes(config)
    try:
        with open(tmp_path / "watchdog.stderr", "wb") as stderr:
            watchdog = procs.start("run", stdout=stderr, stderr=stderr)
        components = wait_until(lambda: (c := status(data)) and NOT_IN in c.get("monitor:velo-test", {}).get(
            "status_text", "") and c, 40, message="monitor:velo-test to say its account is not in the group")

        # The monitor's own status line, the bridge's health as the watchdog shows it, and the other projects
        assert components["monitor:velo-test"]["status_text"].endswith(f"unhealthy: {NOT_IN}: nothing from it is "
                                                                        "recorded")
        assert "not in group" not in components["monitor:lawley"]["status_text"]
        wait_until(lambda: (status(data)["bridge:main"]["connection"] or {}).get("not_in_groups") == [
            {"group": GROUP_C, "projects": ["velo-test"]}], 20, message="the bridge's health, as the watchdog shows it")
        shown = cli(config, "status")
        assert shown.returncode == 0 and "monitor:velo-test: velo-test: " in shown.stdout and NOT_IN in shown.stdout

        # check, while the bridge runs, asks it
        checked = cli(config, "check", "--unit-dir", str(tmp_path / "units"))
        assert checked.returncode == 1
        assert f"FAIL  groups    {NOT_IN}: nothing from it is recorded" in checked.stdout
        assert GROUP_A not in checked.stdout.split("groups", 1)[1] and GROUP_B not in checked.stdout

        # and an alert, once, for the project's component
        alert = wait_until(lambda: inbox.bodies, 15, message="the not_in_group alert")[0]
        assert (alert["status"], alert["rule"], alert["component"], alert["summary"]) == \
            ("firing", "not_in_group", "monitor:velo-test", f"{NOT_IN}: nothing from it is recorded")
        watchdog.send_signal(signal.SIGTERM)
        assert watchdog.wait(timeout=30) == 0
    finally:
        procs.stop_all()
    assert len(inbox.bodies) == 1
