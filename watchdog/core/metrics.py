"""Prometheus metrics of the watchdog, served as text on the control port.

A registry of our own rather than prometheus-client's global one: the global
one also carries process/platform collectors and whatever any imported library
registered, and two Metrics objects (tests, a restarted arbiter) would clash
on metric names in it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

# What a program's hooks report for /metrics: (component, name, help, value), read at each scrape.
ProgramGauges = Callable[[], Iterable[tuple[str, str, str, float]]]

# Recoveries run from a few tens of ms (a killed child) to tens of seconds (backoff after a crash loop).
RECOVERY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._up = Gauge("wa_watchdog_component_up", "1 if the component's process is running",
                         ["component"], registry=self.registry)
        self._healthy = Gauge("wa_watchdog_component_healthy", "1 if the component passes its health checks",
                              ["component"], registry=self.registry)
        self._restarts = Counter("wa_watchdog_restarts", "Restarts by component and cause",
                                 ["component", "cause"], registry=self.registry)
        self._recovery = Histogram("wa_watchdog_recovery_seconds", "Time from detecting a failure to healthy again",
                                   ["component"], buckets=RECOVERY_BUCKETS, registry=self.registry)
        # The name predates programs other than the bridge: kept, as /metrics is read by dashboards.
        self._outage = Counter("wa_watchdog_disconnect_seconds",
                               "Seconds spent in an upstream outage (a bridge: disconnected from WhatsApp)",
                               ["component"], registry=self.registry)
        self._programs: list[ProgramGauges] = []
        self.registry.register(_ProgramCollector(self._programs))

    def add_program_gauges(self, source: ProgramGauges) -> None:
        """Export the gauges `source` reports (the programs' own, from their hooks) at each scrape."""
        self._programs.append(source)

    def set_component(self, name: str, up: bool, healthy: bool) -> None:
        self._up.labels(name).set(1 if up else 0)
        self._healthy.labels(name).set(1 if healthy else 0)

    def count_restart(self, name: str, cause: str) -> None:
        self._restarts.labels(name, cause).inc()

    def observe_recovery(self, name: str, seconds: float) -> None:
        self._recovery.labels(name).observe(seconds)

    def observe_outage(self, name: str, seconds: float) -> None:
        self._outage.labels(name).inc(max(seconds, 0.0))

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _ProgramCollector:
    """The programs' own gauges, read when /metrics is scraped, so they are as fresh as the last probe."""

    def __init__(self, sources: list[ProgramGauges]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families: dict[str, GaugeMetricFamily] = {}
        for source in self.sources:
            for component, name, help_text, value in source():
                family = families.setdefault(name, GaugeMetricFamily(f"wa_watchdog_{name}", help_text,
                                                                     labels=["component"]))
                family.add_metric([component], value)
        yield from families.values()

    def describe(self) -> list:
        return []  # dynamic: nothing to check at registration
