"""A stand-in bridge for probe tests: serves GET /api/health from a JSON file the test rewrites.

The file holds {"status": 200 | 503, "state": ..., "open_window": ..., "delay": seconds}; `delay`
makes the answer late (a hung API). The server publishes its URL like a bridge and heartbeats
with sd_notify, so only the HTTP probe can tell a sick bridge from a healthy one.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

from aiohttp import web

from watchdog.shared import endpoints
from watchdog.shared.notify import Notifier


async def serve(data_dir: Path, component: str, state_file: Path) -> None:
    async def health(request: web.Request) -> web.Response:
        answer = json.loads(state_file.read_text(encoding="utf-8"))
        await asyncio.sleep(answer.get("delay", 0))
        body = {"status": "ok" if answer["status"] == 200 else "unavailable", "state": answer["state"],
                "reason": answer.get("reason", ""), "open_window": answer.get("open_window"), "pid": os.getpid()}
        return web.json_response(body, status=answer["status"])

    app = web.Application()
    app.router.add_get("/api/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    endpoints.publish(data_dir, component, {"api": f"http://{host}:{port}"})
    notifier = Notifier()
    notifier.ready()
    interval = int(os.environ.get("WATCHDOG_USEC", "1000000")) / 4_000_000
    while True:
        notifier.heartbeat()
        await asyncio.sleep(interval)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--component", required=True)
    parser.add_argument("--state-file", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.data_dir, args.component, args.state_file))


if __name__ == "__main__":
    main()
