"""`wa-watchdog drops-api`: the drops and feedback API for the web app, and the webhook deliverer.

One process, supervised like a monitor: READY=1 once serving, WATCHDOG=1 and
STATUS= (webhook depth and dead events) from its event loop, URL published
in run/drops-api.json (in the background while a full disk refuses it: never
a reason to exit). One store connection on the event loop: the API's
queries are indexed and take well under a millisecond on SQLite, and a
second thread would only add hand-offs.
"""
from __future__ import annotations

import argparse
import asyncio
import errno
import os
import sqlite3
from collections.abc import Coroutine
from contextlib import suppress

import aiohttp
from aiohttp import web
from loguru import logger

from bridge.integrity import CorruptStore
from monitors.api import cors
from monitors.api.app import DropsApi, build_app
from monitors.api.webhooks import Deliverer, LookSchedule, WokenSchedule
from monitors.drops_store import StoreUnavailable, drops_db_path, open_drops_store
from monitors.store.fence import WEBHOOKS
from monitors.store.outbox import FencedOutbox, outbox_channel
from monitors.store_watch import StoreWakes
from watchdog.shared import endpoints, locks, logs, web_guard
from watchdog.shared.alerts import AlertManager
from watchdog.shared.child_entry import ChildEntry
from monitors.config import DropsApiConfig, WebhookConfig
from watchdog.components import Config
from watchdog.shared.exitcodes import EXIT_CONFIG, EXIT_ERROR, EXIT_OK
from watchdog.shared.migrations import SchemaTooNew
from watchdog.shared.http_server import LimitedRunner
from watchdog.shared.publishing import publish_or_retry
from watchdog.shared.recovery_log import RecoveryLog

COMPONENT = "drops-api"
LOCK = "drops-api.lock"  # in the run directory, held for the process's life


def _outbox_wakes(config: Config) -> tuple[LookSchedule, list[Coroutine[None, None, None]]]:
    """What wakes the deliverer on a new event, and the tasks that do it: NOTIFY on PostgreSQL, inotify on
    drops.db's directory (the WAL written), nothing without webhooks (it never looks). Call in the event loop."""
    if not config.webhooks:
        return WokenSchedule(), []
    if config.database.url:
        from monitors.store.pg_listen import OutboxListener
        schedule = WokenSchedule()
        return schedule, [OutboxListener(config.database.url, outbox_channel(config.database.schema),
                                         schedule.wake).run()]
    return StoreWakes().subscribe(drops_db_path(config.data_dir), asyncio.Event()), []


async def _listen(runner: web.AppRunner, settings: DropsApiConfig) -> int | None:
    """Listen on the configured port; with port_fallback a taken port means any free one (returns the taken port)."""
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        return None
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or not settings.port_fallback:
            raise
    await web.TCPSite(runner, settings.host, 0).start()
    return settings.port


async def serve(config: Config) -> int:
    settings = config.drops_api
    try:
        db = open_drops_store(config)
        with suppress(StoreUnavailable):  # PostgreSQL down: serve 503s until it is back
            db.drop_count("")  # connects (and migrates) now: a schema newer than this release stops here, exit 2
    except (SchemaTooNew, CorruptStore) as exc:
        logger.error("drops-api: {}", exc)
        return EXIT_CONFIG
    except (StoreUnavailable, sqlite3.Error) as exc:
        logger.error("drops-api: cannot open the drops store: {}", exc)
        return EXIT_ERROR
    recovery_log = RecoveryLog(config.watchdog.recovery_log, config.watchdog.recovery_log_max_bytes)
    alerts = AlertManager(config.alerts, recovery_log)

    def dead(hook: WebhookConfig, event_id: str, summary: str) -> None:
        alerts.fire("webhook_dead", f"{COMPONENT}:{hook.name}", f"webhook {hook.name}: {summary}")

    http = aiohttp.ClientSession()
    outbox, keeper = db.outbox, None
    if config.cluster is not None and config.webhooks:  # a cluster: one host delivers at a time (issue 21)
        from monitors.lease_keeper import LeaseKeeper
        keeper = LeaseKeeper(config.database, config.cluster, WEBHOOKS, COMPONENT, recovery_log, alerts, lambda: None)
        outbox = FencedOutbox(db.outbox, keeper.fence)
    api = DropsApi(config, db, http, Deliverer(config.webhooks, outbox, http, dead))
    api.deliverer.start_receivers()  # before the URL is published: a receiver added now starts at the event of now
    schedule, listeners = _outbox_wakes(config)
    if keeper is not None:
        keeper.on_change = schedule.wake.set  # the lease came or went: look at the outbox now
    guard = [cors.middleware(settings.allowed_origins),  # first: a preflight carries no token
             *web_guard.middlewares(settings.allowed_hosts, settings.allowed_origins, settings.token)]
    runner = LimitedRunner(build_app(api, guard), access_log=None, handle_signals=False)  # connection cap, header timeout
    await runner.setup()
    try:
        taken = await _listen(runner, settings)
    except OSError as exc:
        logger.error("drops-api: cannot listen on {}:{}: {}", settings.host, settings.port, exc.strerror or exc)
        await runner.cleanup()
        await http.close()
        db.close()
        return EXIT_ERROR
    host, port = runner.addresses[0][:2]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    if taken:
        logger.warning("drops_api.port {} is taken: serving on free port {} instead (port_fallback)", taken, port)
    later = publish_or_retry(config.data_dir, COMPONENT, {"api": url})  # a full disk: serve, publish when it can
    async with ChildEntry(settings.watchdog_sec, api.status_line) as entry:  # SIGTERM/SIGINT stop it from here on
        entry.ready()
        logger.info("drops-api serving on {} (store {}, {} webhook(s))", url, db.description, len(config.webhooks))
        entry.start_heartbeat()
        tasks = [asyncio.create_task(api.deliverer.run(schedule)), *(asyncio.create_task(job) for job in listeners),
                 *([asyncio.create_task(later)] if later is not None else []),
                 *([asyncio.create_task(keeper.run(entry.stop))] if keeper is not None else [])]
        await entry.stop.wait()

        entry.stopping()
        await entry.stop_heartbeat()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()
        await alerts.close()
        await http.close()
        db.close()
        record = endpoints.read(config.data_dir, COMPONENT)
        if record and record.get("pid") == os.getpid():
            endpoints.remove(config.data_dir, COMPONENT)
        logger.info("drops-api stopped")
        return EXIT_OK


def cmd_drops_api(config: Config, args: argparse.Namespace) -> int:
    logs.setup(COMPONENT)
    if not config.drops_api.enabled:
        logger.error("drops-api is disabled in {} ([drops_api] enabled = false)", config.path)
        return EXIT_CONFIG
    # One per data directory, as one bridge per session: a second (started by hand beside the watchdog's)
    # would overwrite run/drops-api.json and remove it on exit, leaving the supervised one unfindable.
    try:
        lock, _ = locks.take(endpoints.run_dir(config.data_dir) / LOCK)
    except locks.Held as exc:
        running = endpoints.url(config.data_dir, COMPONENT)
        logger.error("drops-api: another drops-api (pid {}) already serves {}{}; not starting a second one "
                     "(the watchdog's: `wa-watchdog restart drops-api`)", exc.pid or "unknown", config.data_dir,
                     f" at {running}" if running else "")
        return EXIT_ERROR
    locks.write_owner(lock)
    try:
        return asyncio.run(serve(config))
    finally:
        os.close(lock)
