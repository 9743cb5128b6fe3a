"""The drops domain's built-in programs, generated from the config: the monitor processes of the enabled projects
(`[monitors] projects_per_process` to a process) and drops-api, each an ordinary `Program` with READY=1."""
from __future__ import annotations

from dataclasses import replace

from monitors.config import monitor_component
from watchdog.components import Config
from watchdog.shared.own_programs import fingerprint, own_argv
from watchdog.shared.programs import OWN_NO_RESTART_EXITS, Check, Program


def programs(config: Config) -> list[Program]:
    """The monitor processes, then drops-api (when enabled)."""
    found = []
    own_jids = sorted(config.own_jids)
    for projects in config.monitor_groups():
        names = [project.name for project in projects]
        accounts = [config.accounts[name] for p in projects for name in dict.fromkeys((p.listen_account, *p.send_accounts))]
        accounts = list({account.name: account for account in accounts}.values())
        reads = [replace(a, follow_groups=[]) for a in accounts]  # another project's groups are not its business
        receipts = sorted(a for a, p in config.first_senders().items() if p in names)  # whose receipts it follows
        found.append(Program(
            monitor_component(projects), own_argv(config, "monitor", *(w for n in names for w in ("--project", n))),
            after=tuple(a.component for a in accounts), ready=Check("notify"),
            watchdog_sec=min(p.watchdog_sec for p in projects), rss_limit_mb=max(p.rss_limit_mb for p in projects),
            no_restart_exit_codes=OWN_NO_RESTART_EXITS,
            signature=(("monitor",), *(("--project", n) for n in names)), group="monitor",
            fingerprint=fingerprint(config, projects, reads, own_jids, receipts)))
    if config.drops_api.enabled:  # the drops domain's API and webhook deliverer (monitors/api)
        found.append(Program(
            "drops-api", own_argv(config, "drops-api"), ready=Check("notify"),
            watchdog_sec=config.drops_api.watchdog_sec, rss_limit_mb=config.drops_api.rss_limit_mb,
            no_restart_exit_codes=OWN_NO_RESTART_EXITS, signature=(("drops-api",),),
            fingerprint=fingerprint(config, config.drops_api, config.webhooks, config.database, config.projects,
                                    config.accounts, config.alerts)))
    return found
