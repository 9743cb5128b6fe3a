"""Every API's OpenAPI document matches its routes, is served at /openapi.json, and survives a schemathesis run
against the running system (positive and negative cases): no 5xx, every answer conforms to the document."""
from __future__ import annotations

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
from tests.conftest import BASE_CONFIG, Processes, wait_until
from tests.contracts import CONTRACTS, Contract, documented, routes
from watchdog.shared import endpoints

EXAMPLES = 8  # per operation and mode: the whole run stays within ~30 s on a loaded 2-core machine
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.name)
def test_the_document_matches_the_routes(contract: Contract) -> None:
    spec = contract.spec()
    assert spec["openapi"].startswith("3.1")
    assert routes(contract.app()) == documented(spec), f"watchdog/openapi/{contract.document} drifted from the routes"


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

