"""Prometheus metrics: own registry, names, labels, buckets."""
from __future__ import annotations

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from watchdog.core.metrics import Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple], float]:
    body, _ = metrics.render()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def test_components_restarts_recoveries_and_disconnects() -> None:
    metrics = Metrics()
    metrics.set_component("bridge:main", up=True, healthy=False)
    metrics.set_component("monitor:lawley", up=False, healthy=False)
    metrics.set_component("bridge:main", up=True, healthy=True)
    metrics.count_restart("bridge:main", "SIGKILL")
    metrics.count_restart("bridge:main", "SIGKILL")
    metrics.count_restart("bridge:main", "hang")
    metrics.observe_recovery("bridge:main", 0.04)
    metrics.observe_recovery("bridge:main", 0.41)
    metrics.observe_recovery("bridge:main", 2.6)
    metrics.observe_outage("bridge:main", 12.5)
    metrics.observe_outage("bridge:main", 2.5)

    s = samples(metrics)
    bridge = (("component", "bridge:main"),)
    assert s[("wa_watchdog_component_up", bridge)] == 1
    assert s[("wa_watchdog_component_healthy", bridge)] == 1
    assert s[("wa_watchdog_component_up", (("component", "monitor:lawley"),))] == 0
    assert s[("wa_watchdog_restarts_total", (("cause", "SIGKILL"), ("component", "bridge:main")))] == 2
    assert s[("wa_watchdog_restarts_total", (("cause", "hang"), ("component", "bridge:main")))] == 1
    assert s[("wa_watchdog_recovery_seconds_count", bridge)] == 3
    assert s[("wa_watchdog_recovery_seconds_bucket", (("component", "bridge:main"), ("le", "0.05")))] == 1
    assert s[("wa_watchdog_recovery_seconds_bucket", (("component", "bridge:main"), ("le", "0.5")))] == 2
    assert s[("wa_watchdog_recovery_seconds_bucket", (("component", "bridge:main"), ("le", "30.0")))] == 3
    assert s[("wa_watchdog_disconnect_seconds_total", bridge)] == 15.0
    assert all(name.startswith("wa_watchdog_") for name, _ in s)


def test_content_type_is_prometheus_text() -> None:
    _, content_type = Metrics().render()
    assert content_type.startswith("text/plain") and "version=" in content_type


def test_each_instance_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()  # the global registry would refuse the second set of names
    first.count_restart("sim", "exit code 1")
    assert ("wa_watchdog_restarts_total", (("cause", "exit code 1"), ("component", "sim"))) not in samples(second)
    assert REGISTRY.get_sample_value("wa_watchdog_restarts_total", {"component": "sim", "cause": "exit code 1"}) is None


def test_programs_report_their_own_gauges_read_at_each_scrape() -> None:
    metrics = Metrics()
    depth = {"bridge:main": 3.0}
    metrics.add_program_gauges(lambda: [(name, "outbox_depth", "queued", value) for name, value in depth.items()])
    assert samples(metrics)[("wa_watchdog_outbox_depth", (("component", "bridge:main"),))] == 3.0
    depth["bridge:main"] = 0.0  # fresh at the next scrape, not frozen at registration
    depth["bridge:backup"] = 7.0
    s = samples(metrics)
    assert s[("wa_watchdog_outbox_depth", (("component", "bridge:main"),))] == 0.0
    assert s[("wa_watchdog_outbox_depth", (("component", "bridge:backup"),))] == 7.0
