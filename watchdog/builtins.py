"""The built-in programs, generated from the config: the simulator, one bridge per account, the monitor processes.

They are ordinary `Program`s: the supervision core treats them exactly like a
`[[programs]]` entry. What only the bridge needs (the classification of its
health answer, its warm standby) comes from its hooks, `bridge.supervision:hooks`.

`fingerprint` holds what of the config each one reads, so a reload restarts a
program only when its own part changed: adding a project starts one monitor
and leaves the bridge (and its WhatsApp session) alone.
"""
from __future__ import annotations

import hashlib
import sys
from dataclasses import replace

from watchdog.shared import endpoints
from watchdog.shared.config import Config, monitor_component
from watchdog.shared.programs import OWN_NO_RESTART_EXITS, Check, Program

BRIDGE_HOOKS = "bridge.supervision:hooks"


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode("utf-8")).hexdigest()[:16]


def _argv(config: Config, *args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "watchdog.cli", args[0], "--config", str(config.path),
            "--data-dir", str(config.data_dir), *args[1:])


def builtin_programs(config: Config) -> list[Program]:
    """sim (when configured and enabled), one bridge per account, the monitor processes of the enabled projects
    (`[monitors] projects_per_process` to a process), drops-api."""
    logs = (config.watchdog.recovery_log, config.watchdog.recovery_log_max_bytes)
    found = []
    sim_name = []
    if config.sim is not None and config.sim.enabled and not config.sim.url:  # url: another's simulator
        sessions = sorted(a.phone for a in config.accounts.values() if a.transport == "sim")
        found.append(Program("sim", _argv(config, "sim"), ready=Check("notify"), watchdog_sec=config.sim.watchdog_sec,
                             rss_limit_mb=config.sim.rss_limit_mb, no_restart_exit_codes=OWN_NO_RESTART_EXITS,
                             signature=(("sim",),), fingerprint=_fingerprint(config.sim, sessions, logs)))
        sim_name = ["sim"]
    for account in config.accounts.values():
        probe = account.probe
        socket = endpoints.health_socket(config.data_dir, account.component)  # its own, outside the API's cap
        health = Check("http", endpoint="api", path="/api/health", socket=str(socket or ""), token=account.api_token,
                       period=probe.period, timeout=probe.timeout, failure_threshold=probe.failure_threshold,
                       initial_delay=probe.initial_delay)
        # follow_groups derived from the projects is left out: a new project must not restart the session.
        # (The bridge stores every group's messages anyway; only a later backfill's group list waits.)
        found.append(Program(
            account.component, _argv(config, "bridge", "--account", account.name),
            after=tuple(sim_name) if account.transport == "sim" else (), ready=health, liveness=(health,),
            watchdog_sec=account.watchdog_sec, rss_limit_mb=account.rss_limit_mb,
            no_restart_exit_codes=OWN_NO_RESTART_EXITS, hooks=BRIDGE_HOOKS, standby=account.standby,
            pidfile=account.session_dir / "session.lock", signature=(("bridge",), ("--account", account.name)),
            fingerprint=_fingerprint(replace(account, follow_groups=[]), logs)))
    own_jids = sorted(config.own_jids)
    for projects in config.monitor_groups():
        names = [project.name for project in projects]
        accounts = [config.accounts[name] for p in projects for name in dict.fromkeys((p.listen_account, p.send_account))]
        accounts = list({account.name: account for account in accounts}.values())
        reads = [replace(a, follow_groups=[]) for a in accounts]  # another project's groups are not its business
        receipts = sorted(a for a, p in config.first_senders().items() if p in names)  # whose receipts it follows
        found.append(Program(
            monitor_component(projects), _argv(config, "monitor", *(w for n in names for w in ("--project", n))),
            after=tuple(a.component for a in accounts), ready=Check("notify"),
            watchdog_sec=min(p.watchdog_sec for p in projects), rss_limit_mb=max(p.rss_limit_mb for p in projects),
            no_restart_exit_codes=OWN_NO_RESTART_EXITS,
            signature=(("monitor",), *(("--project", n) for n in names)), group="monitor",
            fingerprint=_fingerprint(projects, reads, own_jids, receipts, logs)))
    if config.drops_api.enabled:  # the drops domain's API and webhook deliverer (monitors/api), READY=1 like a monitor
        found.append(Program(
            "drops-api", _argv(config, "drops-api"), ready=Check("notify"), watchdog_sec=config.drops_api.watchdog_sec,
            rss_limit_mb=config.drops_api.rss_limit_mb, no_restart_exit_codes=OWN_NO_RESTART_EXITS,
            signature=(("drops-api",),), fingerprint=_fingerprint(config.drops_api, config.webhooks, config.database,
                                                                  config.projects, config.accounts, config.alerts,
                                                                  logs)))
    return found


def builtin_names(config: Config) -> list[str]:
    return [program.name for program in builtin_programs(config)]


def all_programs(config: Config) -> list[Program]:
    """What `wa-watchdog run` supervises: the built-ins, then every `[[programs]]` entry."""
    return builtin_programs(config) + list(config.programs)
