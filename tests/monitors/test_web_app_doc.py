"""docs/WEB-APP.md's shell examples run as written against the demo (conf/demo.toml under `wa-watchdog run`):
every curl answers 2xx, in the order a reader runs them. Only the ports move to free ones, as tests must."""
from __future__ import annotations

import json

import re
import subprocess
from pathlib import Path

import pytest

from tests.bridge_support import call, inject
from tests.conftest import GROUP_A, ROOT, Processes, wait_until
from tests.pg import free_port
from watchdog.shared import endpoints

DOC = ROOT / "docs" / "WEB-APP.md"
DOC_API = "127.0.0.1:8091"  # where the examples (and the demo) put the drops API

pytestmark = pytest.mark.slow


def shell_examples(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", text, re.M | re.S)


def demo_config(root: Path, bridge_port: int, api_port: int, token: str) -> Path:
    text = (ROOT / "conf" / "demo.toml").read_text(encoding="utf-8")
    if token:  # [drops_api] is the demo's last table
        assert text.rindex("\n[") == text.index("\n[drops_api]"), "conf/demo.toml: [drops_api] is not last"
        text += f'token = "{token}"\n'
    for old, new in (('data_dir = "../var/demo"', 'data_dir = "data"'),
                     ("api_port = 8080", f"api_port = {bridge_port}"), ("port = 8091", f"port = {api_port}")):
        assert old in text, f"conf/demo.toml no longer says {old}"
        text = text.replace(old, new)
    path = root / "demo.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("token", ["", "a-token-with-$-and-spaces"], ids=["demo", "with-a-token"])
def test_every_shell_example_of_the_web_app_guide_runs_against_the_demo(tmp_path: Path, token: str) -> None:
    """As is, and as a reader with a token runs them: TOKEN set where the guide says (the token must be quoted)."""
    examples = shell_examples(DOC.read_text(encoding="utf-8"))
    assert len(examples) >= 5 and all(DOC_API in e or "$API" in e for e in examples if "curl" in e)
    port = free_port()
    config = demo_config(tmp_path, free_port(), port, token)
    data_dir = tmp_path / "data"
    procs = Processes(config)
    with open(tmp_path / "watchdog.log", "wb") as log:
        procs.start("run", stdout=log, stderr=subprocess.STDOUT)
    try:
        api = wait_until(lambda: endpoints.url(data_dir, "drops-api"), 60, message="the demo's drops API")
        assert api == f"http://127.0.0.1:{port}"
        sim = wait_until(lambda: endpoints.url(data_dir, "sim"), 30, message="the simulator")
        bridge = wait_until(lambda: endpoints.url(data_dir, "bridge:main"), 30, message="the bridge")
        wait_until(lambda: call("GET", f"{bridge}/api/health")[0] == 200, 30, message="the bridge connected")
        inject(sim, "DR1734150 installed", GROUP_A)  # a lawley drop, whatever the demo's traffic posted
        auth = {"Authorization": f"Bearer {token}"}
        wait_until(lambda: call("GET", f"{api}/api/drops?project=lawley&drop_number=DR1734150", headers=auth)[1]
                   ["drops"], 30, message="the drop recorded")
        script = "\n".join(["set -euo pipefail", 'curl() { command curl --fail-with-body --max-time 20 "$@"; echo; }',
                            *examples]).replace(DOC_API, f"127.0.0.1:{port}")
        assert script.count('TOKEN=""') == 1
        script = script.replace('TOKEN=""', f"TOKEN='{token}'")
        result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{result.stderr}\n{result.stdout}"
        answers = [line for line in result.stdout.splitlines() if line.startswith("{")]
        assert len(answers) == sum(e.count("curl -s") for e in examples) - 2, result.stdout  # two went into variables
        feedback = json.loads(answers[-1])["feedback"]  # sent, or queued while the account's pace holds it
        assert feedback["status"] in ("sent", "queued"), answers[-1]
        drop_id = json.loads(answers[-1])["drop"]["id"]
        wait_until(lambda: [f["status"] for f in call("GET", f"{api}/api/drops/{drop_id}", headers=auth)[1]["feedback"]
                            if f["id"] == feedback["id"]] == ["sent"], 30, message="the queued feedback sent")
    finally:
        procs.stop_all()
