"""What the drops domain adds to `wa-watchdog status`: sending per account (monitors/sending_panel.py), then the
cluster (monitors/cluster_status.py)."""
from __future__ import annotations

from monitors import cluster_status, sending_panel
from watchdog.components import Config
from watchdog.shared.component import StatusSection


def sections(config: Config, running: list[dict]) -> list[StatusSection]:
    return sending_panel.sections(config, running) + cluster_status.sections(config)
