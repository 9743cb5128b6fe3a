"""Helpers for the bridge process tests: HTTP calls, a running sim + bridge, a raw session socket, the store."""
from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

from tests.conftest import GROUP_A, GROUP_B, Processes, wait_until
from watchdog.shared import endpoints

PHONE = "27710000000"
SENDER = "27710000001@s.whatsapp.net"


def call(method: str, url: str, body: object = None, headers: dict[str, str] | None = None,
         raw: bytes | None = None, timeout: float = 10.0) -> tuple[int, object]:
    """One HTTP request; returns (status, parsed JSON body) also for 4xx/5xx answers."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _log_file(data_dir: Path, name: str) -> object:
    """Children log to files: an unread stderr pipe would fill up and block a chatty child."""
    path = data_dir.parent / f"{name}-{len(list(data_dir.parent.glob(f'{name}-*.log')))}.log"
    return open(path, "wb")


def start_sim(procs: Processes, data_dir: Path, old_pid: int | None = None,
              env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    proc = procs.start("sim", env=env, stdout=subprocess.DEVNULL, stderr=_log_file(data_dir, "sim"))
    return proc, endpoints.wait_url(data_dir, "sim", timeout=15, newer_than_pid=old_pid)


def bridge_url(data_dir: Path, proc: subprocess.Popen) -> str | None:
    record = endpoints.read(data_dir, "bridge:main")
    return record["endpoints"]["api"] if record and record["pid"] == proc.pid else None


def health(url: str, headers: dict[str, str] | None = None) -> dict:
    return call("GET", f"{url}/api/health", headers=headers)[1]  # type: ignore[return-value]


def start_bridge(procs: Processes, data_dir: Path, connected: bool = True,
                 env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start `wa-watchdog bridge --account main`; wait for its API (and a live connection)."""
    proc = procs.start("bridge", "--account", "main", env=env, stdout=subprocess.DEVNULL,
                       stderr=_log_file(data_dir, "bridge"))
    url = wait_until(lambda: bridge_url(data_dir, proc), timeout=15, message="the bridge to publish its API")
    if connected:
        wait_until(lambda: health(url).get("state") == "connected", timeout=15, message="the bridge to connect")
    return proc, url


def inject(sim_url: str, text: str, chat_jid: str, sender: str = SENDER, media: dict | None = None) -> dict:
    status, body = call("POST", f"{sim_url}/sim/inject", {"chat_jid": chat_jid, "sender_jid": sender, "text": text,
                                                          **({"media": media} if media else {})})
    assert status == 200, body
    return body  # type: ignore[return-value]


def sessions(sim_url: str) -> dict:
    return call("GET", f"{sim_url}/sim/sessions")[1][PHONE]  # type: ignore[index]


def sent(sim_url: str) -> list[dict]:
    return call("GET", f"{sim_url}/sim/sent?session={PHONE}")[1]  # type: ignore[return-value]


def db(data_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{data_dir / 'accounts/main/messages.db'}?mode=ro", uri=True, timeout=5)


def rows(data_dir: Path, sql: str, *params: object) -> list[tuple]:
    conn = db(data_dir)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def consume_queue_elsewhere(data_dir: Path, expected: int) -> list[str]:
    """Another client on the same session (a second device, a restored session copy) takes the
    offline queue: it receives and acknowledges `expected` messages, then leaves. The bridge
    will never get them from the queue; only a history backfill can recover them."""
    async def run() -> list[str]:
        ids: list[str] = []
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(endpoints.url(data_dir, "sim", "ws")) as ws:
                await ws.send_str(json.dumps({"type": "hello", "session": PHONE}))
                connected = False
                while not connected or len(ids) < expected:
                    frame = (await asyncio.wait_for(ws.receive_json(), 10))
                    connected = connected or frame.get("type") == "connected"
                    if frame.get("type") == "messages":
                        batch = [m["id"] for m in frame["messages"]]
                        ids += batch
                        await ws.send_str(json.dumps({"type": "ack", "ids": batch}))
        return ids
    return asyncio.run(run())


@contextmanager
def streaming(sim_url: str, total: int, first_drop: int) -> Iterator[list[str]]:
    """Inject `total` drops into groups A and B from a thread while the body runs (e.g. kills the bridge).

    Yields the ids injected so far (a growing list); on exit waits for the stream to finish.
    """
    injected: list[str] = []

    def stream() -> None:
        for n in range(total):
            injected.append(inject(sim_url, f"DR{first_drop + n}", GROUP_A if n % 2 else GROUP_B)["id"])
    streamer = threading.Thread(target=stream)
    streamer.start()
    try:
        yield injected
    finally:
        streamer.join()
