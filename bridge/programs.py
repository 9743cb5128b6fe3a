"""The bridge's built-in programs, generated from the config: the simulator (when configured) and one bridge per
account. Ordinary `Program`s: the core treats them as any `[[programs]]` entry; what only the bridge needs (the
classification of its health answer, its warm standby) comes from its hooks, `bridge.supervision:hooks`."""
from __future__ import annotations

from dataclasses import replace

from watchdog.shared import endpoints
from watchdog.components import Config
from watchdog.shared.own_programs import fingerprint, own_argv
from watchdog.shared.programs import OWN_NO_RESTART_EXITS, Check, Program

BRIDGE_HOOKS = "bridge.supervision:hooks"


def programs(config: Config) -> list[Program]:
    """sim (when configured and enabled), then one bridge per account."""
    found = []
    sim_name = []
    if config.sim is not None and config.sim.enabled and not config.sim.url:  # url: another's simulator
        sessions = sorted(a.phone for a in config.accounts.values() if a.transport == "sim")
        found.append(Program("sim", own_argv(config, "sim"), ready=Check("notify"),
                             watchdog_sec=config.sim.watchdog_sec, rss_limit_mb=config.sim.rss_limit_mb,
                             no_restart_exit_codes=OWN_NO_RESTART_EXITS, signature=(("sim",),),
                             fingerprint=fingerprint(config, config.sim, sessions)))
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
            account.component, own_argv(config, "bridge", "--account", account.name),
            after=tuple(sim_name) if account.transport == "sim" else (), ready=health, liveness=(health,),
            watchdog_sec=account.watchdog_sec, rss_limit_mb=account.rss_limit_mb,
            no_restart_exit_codes=OWN_NO_RESTART_EXITS, hooks=BRIDGE_HOOKS, standby=account.standby,
            pidfile=account.session_dir / "session.lock", signature=(("bridge",), ("--account", account.name)),
            fingerprint=fingerprint(config, replace(account, follow_groups=[]))))
    return found
