"""What every watcher shares with the arbiter: settings, the data directory, the recovery log, alerts,
metrics, the HTTP client for probes, the log sink, whom to tell about a change, the start bounds, the
watch over the watchdog's own loop and clock (its gaps are what the checks ask about), and how children are
started (forked from the template, or exec)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from watchdog.shared.logs import StderrSink
from watchdog.core.self_watch import SelfWatch
from watchdog.shared.config_model import WatchdogConfig
from watchdog.shared.recovery_log import RecoveryLog
from watchdog.core.child import Template
from watchdog.core.throttle import Launcher

if TYPE_CHECKING:
    from watchdog.shared.alerts import AlertManager
    from watchdog.core.metrics import Metrics
    from watchdog.core.watcher import Watcher


@dataclass
class Context:
    settings: WatchdogConfig
    data_dir: Path
    recovery_log: RecoveryLog
    alerts: AlertManager
    metrics: Metrics
    http: aiohttp.ClientSession
    sink: StderrSink
    on_change: Callable[[Watcher], None]
    launcher: Launcher | None = None  # None: unbounded (a watcher on its own, in tests)
    loop_gaps: SelfWatch = field(default_factory=SelfWatch)  # what the checks ask of it; not ticking: no gap is seen
    template: Template | None = None  # fork our own components from it (watchdog/core/forkserver.py); None: exec
