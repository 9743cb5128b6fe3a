"""Every API's OpenAPI document matches its routes, is served at /openapi.json, and survives a schemathesis run
against the running system (positive and negative cases): no 5xx, every answer conforms to the document."""
from __future__ import annotations

import json
import re
import subprocess

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_schema_conformance,
                                 status_code_conformance)
from schemathesis.specs.openapi.checks import negative_data_rejection

from tests.bridge_support import call
from tests.conftest import BASE_CONFIG, GROUP_A, Processes, wait_until
from monitors.drops_store import FEEDBACK_FAILED, FEEDBACK_SENT, NewFeedback, ReceiptStamp, Submission, open_drops_store
from monitors.store.schema import V4_OUTBOX
from tests.contracts import CONTRACTS, Contract, documented, routes, webhook_event_problems
from watchdog.shared import endpoints
from watchdog.shared.config import WEBHOOK_EVENTS, load

EXAMPLES = 8  # per operation and mode: the whole run stays within ~30 s on a loaded 2-core machine
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.name)
def test_the_document_matches_the_routes(contract: Contract) -> None:
    spec = contract.spec()
    assert spec["openapi"].startswith("3.1")
    assert routes(contract.app()) == documented(spec), f"watchdog/openapi/{contract.document} drifted from the routes"


DROPS_API = next(c for c in CONTRACTS if c.name == "drops-api")


def test_the_documented_webhook_events_are_the_ones_the_code_knows() -> None:
    """One list: the config's WEBHOOK_EVENTS; the document's `webhooks` and the store's CHECK constraint agree
    (and the next test: the store writes each of them)."""
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


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """`wa-watchdog run` with every contract's component; {contract name: base URL}."""
    root = tmp_path_factory.mktemp("contracts")
    config = root / "wa.toml"
    config.write_text(BASE_CONFIG + "".join(c.config for c in CONTRACTS), encoding="utf-8")
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


@pytest.mark.slow
@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.name)
def test_schemathesis_finds_no_server_error_and_no_answer_off_the_document(contract: Contract,
                                                                           running: dict[str, str]) -> None:
    url = running[contract.name]
    status, served = call("GET", f"{url}/openapi.json")
    assert status == 200 and served == contract.spec()
    schema = schemathesis.openapi.from_dict(contract.spec())
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            checks = CHECKS + ([negative_data_rejection] if mode == GenerationMode.NEGATIVE else [])

            @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                                 phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def exercise(case: schemathesis.Case) -> None:
                case.call_and_validate(base_url=url, checks=checks, timeout=15)

            try:
                exercise()
            except hypothesis.errors.Unsatisfiable:
                continue  # e.g. no invalid request can be made for an operation without inputs
            except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)

