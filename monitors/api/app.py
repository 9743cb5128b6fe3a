"""The drops API's aiohttp app: thin handlers over `monitors.api.service`, errors as JSON.

Routes (watchdog/openapi/drops-api.json is the contract, served at /openapi.json; CORS preflights: monitors.api.cors):
GET /api/drops, GET /api/drops/{id}, POST /api/drops/{id}/feedback,
POST /api/feedback, GET /api/health, GET /metrics, GET /openapi.json.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from monitors.api import service
from monitors.api.webhooks import Deliverer
from monitors.drops_store import DropsDB, StoreUnavailable
from monitors.store.shapes import rfc3339
from watchdog.shared import web_guard
from watchdog.components import Config
from watchdog.shared.http_server import openapi_document

MAX_BODY = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class DropsApi:
    """What the handlers share: the config, the one store connection, HTTP to the bridges, the deliverer."""

    config: Config
    db: DropsDB
    http: aiohttp.ClientSession
    deliverer: Deliverer
    openapi: dict = field(default_factory=lambda: json.loads(openapi_document("drops-api.json")))

    def webhook_counts(self) -> dict[str, dict]:
        """Per receiver: the store's durable counts and this process's failed attempts."""
        stats = self.deliverer.stats()
        counts = {}
        for hook in self.config.webhooks:
            c = self.db.outbox.counts(hook.name, hook.events)
            counts[hook.name] = {"pending": c.pending, "dead": c.dead, "delivered": c.delivered,
                                 "oldest_pending_at": rfc3339(c.oldest_pending_at),
                                 "failed_attempts": stats[hook.name].failures,
                                 "last_error": stats[hook.name].last_error}
        return counts

    def status_line(self) -> str:
        """`drops-api · webhooks crm 2 pending 0 dead (5 failed attempts, last: HTTP 500)` for STATUS=."""
        try:
            hooks = [f"{name} {c['pending']} pending {c['dead']} dead"
                     + (f" ({c['failed_attempts']} failed attempts, last: {c['last_error'][:80]})"
                        if c["pending"] and c["failed_attempts"] else "")
                     for name, c in self.webhook_counts().items()]
        except Exception as exc:  # noqa: BLE001 - a store outage is what the status must show
            return f"drops-api · store unavailable: {exc}"
        store = f" · outbox unavailable: {self.deliverer.store_error}" if self.deliverer.store_error else ""
        return "drops-api" + (f" · webhooks {', '.join(hooks)}" if hooks else "") + store


CONTEXT = web.AppKey("drops_api", DropsApi)


@web.middleware
async def service_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The service's exceptions as JSON answers; a store that cannot answer is a 503, never a traceback."""
    try:
        return await handler(request)
    except service.BadRequest as exc:
        return web.json_response({"error": str(exc)}, status=400)
    except service.NotFound as exc:
        return web.json_response({"error": str(exc)}, status=404)
    except service.Conflict as exc:
        return web.json_response({"error": str(exc)}, status=409)
    except (StoreUnavailable, sqlite3.OperationalError) as exc:  # PostgreSQL down, SQLite locked: try again later
        logger.warning("{} {}: store unavailable: {}", request.method, request.path, exc)
        return web.json_response({"error": f"drops store unavailable: {exc}"}, status=503,
                                 headers={"Retry-After": "1"})


async def list_drops(request: web.Request) -> web.Response:
    api = request.app[CONTEXT]
    return web.json_response(service.list_drops(api.db, api.config, request.query))


async def get_drop(request: web.Request) -> web.Response:
    return web.json_response(service.drop_detail(request.app[CONTEXT].db, request.match_info["id"]))


async def feedback_for_drop(request: web.Request) -> web.Response:
    api = request.app[CONTEXT]
    message = service.message_of(await web_guard.json_body(request))
    drop = service.drop_by_id(api.db, request.match_info["id"])
    status, body = await service.send_feedback(api.db, api.config, api.http, drop, message,
                                               request.headers.get("Idempotency-Key"))
    return web.json_response(body, status=status)


async def feedback_by_number(request: web.Request) -> web.Response:
    api = request.app[CONTEXT]
    drop, message = service.drop_by_number(api.db, api.config, await web_guard.json_body(request))
    status, body = await service.send_feedback(api.db, api.config, api.http, drop, message,
                                               request.headers.get("Idempotency-Key"))
    return web.json_response(body, status=status)


async def health(request: web.Request) -> web.Response:
    api = request.app[CONTEXT]
    return web.json_response({"status": "ok", "store": api.db.description, "webhooks": api.webhook_counts()})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[CONTEXT].openapi)


class WebhookCollector:
    """Prometheus metrics read at scrape time from the store (durable) and the deliverer (this process)."""

    def __init__(self, api: DropsApi) -> None:
        self.api = api

    def collect(self):  # noqa: ANN201 - prometheus_client's collector protocol
        families = {
            "pending": GaugeMetricFamily("wa_watchdog_webhook_pending", "Events waiting for delivery", labels=["webhook"]),
            "dead": GaugeMetricFamily("wa_watchdog_webhook_dead", "Events given up on", labels=["webhook"]),
            "delivered": GaugeMetricFamily("wa_watchdog_webhook_delivered", "Events delivered", labels=["webhook"]),
        }
        failures = CounterMetricFamily("wa_watchdog_webhook_attempt_failures", "Failed delivery attempts since start",
                                       labels=["webhook"])
        for name, counts in self.api.webhook_counts().items():
            for key, family in families.items():
                family.add_metric([name], counts[key])
            failures.add_metric([name], counts["failed_attempts"])
        yield from families.values()
        yield failures
        looks = CounterMetricFamily("wa_watchdog_webhook_looks", "Looks at the event outbox since start (woken by a "
                                    "change, a retry falling due, or the 1 s safety look)")
        looks.add_metric([], self.api.deliverer.looks)
        yield looks


async def metrics(request: web.Request) -> web.Response:
    registry: CollectorRegistry = request.app[REGISTRY]
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


REGISTRY = web.AppKey("registry", CollectorRegistry)


def build_app(api: DropsApi, guard: list) -> web.Application:
    """`guard`: the browser-forgery / token middlewares every API of ours puts first (watchdog.shared.web_guard)."""
    app = web.Application(middlewares=[*guard, service_errors], client_max_size=MAX_BODY)
    app[CONTEXT] = api
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WebhookCollector(api))
    if api.config.cluster is not None:  # a cluster's leases (PostgreSQL: a cluster always has it)
        from monitors.api.lease_metrics import LeaseCollector
        registry.register(LeaseCollector(api.db.db))  # type: ignore[arg-type]
    app[REGISTRY] = registry
    app.router.add_get("/api/drops", list_drops)
    app.router.add_get("/api/drops/{id}", get_drop)
    app.router.add_post("/api/drops/{id}/feedback", feedback_for_drop)
    app.router.add_post("/api/feedback", feedback_by_number)
    app.router.add_get("/api/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    return app
