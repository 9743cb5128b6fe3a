"""The published HTTP contracts (watchdog/openapi/*.json), one entry per API: checked against the routes (drift)
and fuzzed with schemathesis against the running system (tests/watchdog/test_api_contracts.py).

To add an API: one `Contract(...)` line in CONTRACTS — its document, a function that builds its
aiohttp app without running it (for the drift test), the component and endpoint name it publishes
under run/, the config that makes `wa-watchdog run` start it, and what schemathesis must be told that
an OpenAPI document cannot say (a schemathesis.toml fragment).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import jsonschema_rs
from aiohttp import web

from bridge.api import build_app as bridge_app
from monitors.api.app import build_app as drops_app
from watchdog.shared.config import WatchdogConfig
from watchdog.control.console.extensions import Loaded
from watchdog.control.console.view import Console
from watchdog.control.api import build_app as control_app
from watchdog.shared.http_server import openapi_document
from watchdog.core.metrics import Metrics

async def _no_restart(name: str) -> dict:
    raise KeyError(name)


async def _no_reload(cause: str) -> dict:
    return {"ok": True}


@dataclass(frozen=True)
class Contract:
    name: str
    document: str  # file name in watchdog/openapi/
    app: Callable[[], web.Application]  # the app as served, built without running it
    component: str  # publishes run/<component>.json ...
    endpoint: str  # ... with this endpoint's URL
    config: str = ""  # appended to the test config so that `wa-watchdog run` starts it
    fuzz: str = ""  # schemathesis.toml for its run

    def spec(self) -> dict:
        return json.loads(openapi_document(self.document))


CONTRACTS = [
    # 422 is never invalid input (that is a 400) but WhatsApp refusing the message, or an Idempotency-Key reused
    # for another request (the IETF Idempotency-Key draft's status): a schema-valid request may get it.
    Contract("bridge-api", "bridge-api.json", lambda: bridge_app(SimpleNamespace()), "bridge:main", "api",
             fuzz='[checks.positive_data_acceptance]\n'
                  'expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429", "5xx"]\n'),
    Contract("control-api", "control-api.json",
             lambda: control_app(WatchdogConfig(), list, _no_restart, Metrics(), _no_reload, dict, console=Console(
                 SimpleNamespace(watchdog=WatchdogConfig(), data_dir=Path(".")), list, _no_restart, Loaded([], []))),
             # The live stream answers 406 to a client not asking for it (OpenAPI ignores an Accept parameter):
             # ask as EventSource does, and read one event.
             "watchdog", "control", fuzz='[[operations]]\ninclude-path = "/console/events"\n'
                                         'headers = { Accept = "text/event-stream" }\nmax-stream-events = 1\n'),
    Contract("drops-api", "drops-api.json", lambda: drops_app(SimpleNamespace(config=SimpleNamespace(cluster=None)), []), "drops-api", "api",
             "\n[drops_api]\nenabled = true\n"),
]


def routes(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path template) of every route, as an OpenAPI document writes them (HEAD implied by GET)."""
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if route.method != "HEAD" and path:
            found.add((route.method, path))
    return found


def documented(spec: dict) -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch", "options"}
    return {(method.upper(), path) for path, item in spec["paths"].items() for method in item if method in methods}


def webhook_event_problems(spec: dict, event: dict) -> list[str]:
    """What in a delivered webhook event disagrees with the document's `webhooks` entry for its type (formats too:
    a time that is not RFC 3339 is a problem)."""
    if event.get("type") not in spec["webhooks"]:
        return [f"type {event.get('type')!r} is not one of the document's webhooks"]
    root = {"$ref": f"#/webhooks/{event['type']}/post/requestBody/content/application~1json/schema",
            "webhooks": spec["webhooks"], "components": spec["components"]}
    return [f"{list(error.instance_path)}: {error.message}"
            for error in jsonschema_rs.Draft202012Validator(root, validate_formats=True).iter_errors(event)]
