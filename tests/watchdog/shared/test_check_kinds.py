"""The check-kind registry: config validation, descriptions and the core's probe loop all read it, so a kind
registered with one line (and its probe) is parsed from [[programs]] and probed like the built-in ones."""
from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import until
from tests.watchdog.fakes import FakeChild, Verdicts, bench
from watchdog.core import hooks, probes
from watchdog.core.child_checks import Checks
from watchdog.core.child_health import ChildHealth
from watchdog.core.self_watch import SelfWatch
from watchdog.shared import check_kinds
from watchdog.shared.config_model import WatchdogConfig
from watchdog.shared.programs import Check, parse


def error(key: str, problem: str) -> Exception:
    return ValueError(f"{key}: {problem}")


async def file_check(check: Check, target: probes.Target) -> probes.HealthResult:
    """The new kind's probe: OK while its file exists."""
    return probes.HealthResult(probes.OK, "ok") if Path(check.url).exists() else \
        probes.HealthResult(probes.FAILURE, "missing", check.url)


def _path(value: object) -> dict:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"expected an absolute path, got {value!r}")
    return {"url": value}


@pytest.fixture
def file_kind(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The recipe's one registration line, undone after the test."""
    monkeypatch.setattr(check_kinds, "_KINDS", dict(check_kinds._KINDS))
    check_kinds.register(check_kinds.CheckKind("file", _path, lambda check: f"file {check.url}",
                                               probe=f"{__name__}:file_check"))
    probes.probe_for.cache_clear()
    yield
    probes.probe_for.cache_clear()


def test_every_registered_probe_resolves_and_the_unprobed_kinds_are_ready_only() -> None:
    for name in check_kinds.names(probed_only=True):
        assert callable(probes.probe_for(name)), name
    assert probes.probe_for("notify") is None and probes.probe_for("started") is None
    assert check_kinds.names() == ("notify", "http", "tcp", "started")
    assert check_kinds.names(probed_only=True) == ("http", "tcp")
    with pytest.raises(ValueError, match="registered twice"):
        check_kinds.register(check_kinds.CheckKind("tcp", dict, str))


def test_a_kind_no_one_registered_is_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"^programs\.web\.liveness\[0\]: expected exactly one of http, tcp, got none"):
        parse([{"name": "web", "argv": ["x"], "liveness": [{"file": "/tmp/x"}]}], error, Path("."))


def test_a_registered_kind_is_parsed_described_and_probed_by_the_core(file_kind: None, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "alive"
    (program,) = parse([{"name": "web", "argv": ["x"], "ready": "notify",
                         "liveness": [{"file": str(marker), "period": 0.05, "failure_threshold": 2}]}],
                       error, Path("."))
    (check,) = program.liveness
    assert (check.kind, check.url, check.describe()) == ("file", str(marker), f"file {marker}")
    with pytest.raises(ValueError, match=r"^programs\.web\.liveness\[0\]\.file: expected an absolute path"):
        parse([{"name": "web", "argv": ["x"], "liveness": [{"file": "alive"}]}], error, Path("."))

    monkeypatch.setattr(probes, "is_stopped", lambda pid: False)
    monkeypatch.setattr(probes, "proc_sample", lambda pid, now: probes.ProcSample(now, "S", 1.0))

    async def scenario() -> None:
        b = bench(tmp_path)
        health = ChildHealth(program, b.program_alerts(program.name), Verdicts(program.name))
        child = FakeChild(started_at=time.monotonic())
        health.begin(child)  # type: ignore[arg-type]
        failed: list[tuple[str, str]] = []
        settings = dataclasses.replace(WatchdogConfig(), start_timeout=60.0)
        checks = Checks(program, hooks.load(""), settings, health, lambda event, cause: failed.append((event, cause)),
                        b.records(program.name), tmp_path, None, SelfWatch())  # type: ignore[arg-type]
        marker.touch()
        checks.arm(child)  # type: ignore[arg-type]
        health.ready_by_check()
        await until(lambda: health.last_probe is not None and health.last_probe.kind == probes.OK, 5, "an OK answer")
        assert not failed
        marker.unlink()
        await until(lambda: failed, 5, "the file check failing twice")
        assert failed == [("unhealthy", f"file {marker} failed 2 times: missing ({marker})")]
        checks.close()
    asyncio.run(scenario())
