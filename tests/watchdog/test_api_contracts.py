"""Every API's OpenAPI document matches its routes, is served at /openapi.json, and survives a schemathesis run
against the running system: no 5xx, every answer as documented, every schema-valid request accepted and
every invalid one refused."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bridge_support import call
from tests.conftest import BASE_CONFIG, GROUP_A, PACE_OFF, Processes, wait_until
from monitors.drops_store import FEEDBACK_FAILED, FEEDBACK_SENT, NewFeedback, ReceiptStamp, Submission, open_drops_store
from monitors.store.schema import V4_OUTBOX
from tests.contracts import CONTRACTS, Contract, documented, routes, webhook_event_problems
from watchdog.shared import endpoints
from monitors.events import WEBHOOK_EVENTS
from watchdog.components import load

# schemathesis's own runner (its CLI), as an operator would run it: the coverage phase sends every boundary
# the document allows (empty strings, empty lists, a missing optional field, maxLength) and a few that it
# does not; the fuzzing phase then EXAMPLES random requests per operation, valid and invalid. Seeded, so a
# failure reproduces. All three APIs: ~50 s on an idle 2-core machine, ~70 s on a busy one (the bridge is most
# of it: generating strings of up to 65,536 characters that must match a pattern), hence slow.
EXAMPLES = 10
SEED = 1
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance",
          "positive_data_acceptance", "negative_data_rejection", "missing_required_header")
SCHEMATHESIS = Path(sys.executable).with_name("st")


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.name)
def test_the_document_matches_the_routes(contract: Contract) -> None:
    spec = contract.spec()
    assert spec["openapi"].startswith("3.1")
    assert routes(contract.app()) == documented(spec), f"watchdog/openapi/{contract.document} drifted from the routes"


DROPS_API = next(c for c in CONTRACTS if c.name == "drops-api")


def test_the_documented_webhook_events_are_the_ones_the_code_knows() -> None:
    """One list: WEBHOOK_EVENTS (monitors/events.py, made of the names the store writes by); the document's
    `webhooks` and the store's CHECK constraint agree (and the next test: the store writes each of them)."""
    assert sorted(DROPS_API.spec()["webhooks"]) == sorted(WEBHOOK_EVENTS)
    assert sorted(re.findall(r"'([a-z]+\.[a-z]+)'", V4_OUTBOX)) == sorted(WEBHOOK_EVENTS)


def test_every_event_the_store_writes_matches_the_document(write_config) -> None:
    drops = open_drops_store(load(write_config(BASE_CONFIG)))
    try:
        def sub(number: str, message_id: str, backfilled: bool = False) -> Submission:
            return Submission(number, GROUP_A, "Lawley Fibre", "27710000001@s.whatsapp.net", message_id,
                              "2026-11-24 08:00:00.000000+00:00", backfilled)

        def ack(s: Submission) -> NewFeedback:
            return NewFeedback("ack", s.group_jid, f"{s.drop_number} received", (s.submitted_by,), s.message_id)
        drops.record("lawley", "main", 3, [sub("DR1000001", "M1"), sub("DR1000002", "M2", True),
                                           sub("DR1000001", "M3")], ack)
        first, second = drops.pending_feedback("lawley")
        drops.finish_feedback(first, FEEDBACK_SENT, bridge_message_id="3EB0A1")
        drops.finish_feedback(second, FEEDBACK_FAILED, "HTTP 400: not a group")
        drops.record_receipts([ReceiptStamp("3EB0A1", "read", "2026-11-24 08:01:00.000000+00:00",
                                            "27710000001@s.whatsapp.net")])
        events = [json.loads(e.payload) for e in drops.outbox.due("contract", limit=100)]
    finally:
        drops.close()
    assert sorted({e["type"] for e in events}) == sorted(WEBHOOK_EVENTS)
    problems = {e["type"]: webhook_event_problems(DROPS_API.spec(), e) for e in events}
    assert not any(problems.values()), problems


# A keyless send the bridge cannot deliver at once waits send_wait_s (8 s) for it before answering 202: the fuzzer's
# fenced sends under a lease no keeper vouches for always do (4 of them took 32 s of the bridge's run). Waiting
# 0.2 s answers the same 202 through the same path.
FUZZ_CONFIG = BASE_CONFIG.replace(PACE_OFF, f"{PACE_OFF}\nsend_wait_s = 0.2", 1)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """`wa-watchdog run` with every contract's component; {contract name: base URL}."""
    root = tmp_path_factory.mktemp("contracts")
    config = root / "wa.toml"
    config.write_text(FUZZ_CONFIG + "".join(c.config for c in CONTRACTS), encoding="utf-8")
    procs = Processes(config)
    with open(root / "watchdog.log", "wb") as log:
        procs.start("run", stdout=log, stderr=subprocess.STDOUT)
    data_dir = root / "data"
    try:
        urls = {c.name: wait_until(lambda c=c: endpoints.url(data_dir, c.component, c.endpoint), 30,
                                   message=f"{c.component} to publish {c.endpoint}") for c in CONTRACTS}
        bridge = urls["bridge-api"]
        wait_until(lambda: call("GET", f"{bridge}/api/health")[0] == 200, 30, message="the bridge connected")
        yield urls
    finally:
        procs.stop_all()
    assert "Traceback" not in (root / "watchdog.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def hypothesis_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One storage directory for every schemathesis run: hypothesis keeps there the tables of which characters
    each codec encodes, computed from all of Unicode (seconds of CPU) by every run that starts without them.
    Nothing else is read from it (`--generation-database none`): the runs stay independent and seeded."""
    return tmp_path_factory.mktemp("hypothesis")


@pytest.mark.slow
@pytest.mark.timeout(300)  # the bridge's run: 55-65 s on a busy 2-core machine (117 s before send_wait_s above): not 120 s
@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.name)
def test_schemathesis_finds_no_server_error_no_answer_off_the_document_and_no_request_misjudged(
        contract: Contract, running: dict[str, str], hypothesis_home: Path, tmp_path: Path) -> None:
    url = running[contract.name]
    status, served = call("GET", f"{url}/openapi.json")
    assert status == 200 and served == contract.spec()
    (tmp_path / "openapi.json").write_text(json.dumps(served), encoding="utf-8")
    (tmp_path / "schemathesis.toml").write_text(contract.fuzz, encoding="utf-8")
    run = subprocess.run(
        [str(SCHEMATHESIS), "--no-color", "--config-file", "schemathesis.toml", "run", "openapi.json", "--url", url,
         "--checks", ",".join(CHECKS), "--phases", "examples,coverage,fuzzing", "--max-examples", str(EXAMPLES),
         "--seed", str(SEED), "--generation-database", "none", "--request-timeout", "15", "--workers", "1"],
        cwd=tmp_path, env={**os.environ, "HYPOTHESIS_STORAGE_DIRECTORY": str(hypothesis_home)}, capture_output=True,
        text=True, timeout=600)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[report.find("FAILURES"):][:30_000]
    tested, cases = re.search(r"Tested: (\d+)", report), re.search(r"(\d+) generated, \1 passed", report)
    assert tested and int(tested[1]) == len(documented(served)) and cases, report[-3000:]  # it did run them all
