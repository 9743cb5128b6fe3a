"""`scripts/bench bridge`: message ingest rate and `/api/send` latency of a real bridge on the simulator.

Ingest: N messages are posted into the simulator while the bridge is stopped
(they wait in the session's offline queue, as after an outage), then the
bridge starts; the rate is N / (all N visible in messages.db, polled every
2 ms - the `connected` time the bridge recorded).
That is the recovery burst a bridge must swallow; target >= 2,000 messages/s.
Also reported: cold start (process start -> health 200).

Live ingest: N more messages bulk-posted while the bridge is connected;
N / (first post -> all committed), posting time included.

Send latency: sequential `POST /api/send` to a group (durable outbox commit,
send over the websocket, simulator reply, sent message stored) on one
keep-alive connection; target p99 < 20 ms.

Real processes on free ports in a temporary directory, ended by pid.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import aiohttp

from scripts.benchmarks.system_run import PACE_OFF
from watchdog.shared import endpoints

ROOT = Path(__file__).resolve().parents[2]
GROUPS = ("120363000000000001@g.us", "120363000000000002@g.us")
CONFIG = f"""
data_dir = "data"
[sim]
port = 0
[[sim.groups]]
jid = "{GROUPS[0]}"
name = "Lawley Fibre"
participants = ["27710000001", "27710000002"]
[[sim.groups]]
jid = "{GROUPS[1]}"
name = "Mohadin Fibre"
participants = ["27710000003"]
[accounts.main]
transport = "sim"
phone = "27710000000"
api_port = 0
{PACE_OFF}
[[projects]]
name = "lawley"
groups = ["{GROUPS[0]}"]
"""


def _start(config: Path, *args: str, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_SOCKET", "WATCHDOG_"))}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "watchdog.cli", args[0], "--config", str(config), *args[1:]],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=out, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait(condition, timeout: float, what: str, interval: float = 0.002):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return result


def _stored(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM messages").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


async def _inject(sim: str, count: int, first: int = 0, chunk: int = 500) -> None:
    """Post `count` messages through the simulator's bulk inject (lists of `chunk`)."""
    async with aiohttp.ClientSession() as http:
        for start in range(first, first + count, chunk):
            body = [{"chat_jid": GROUPS[n % 2], "sender_jid": "27710000001@s.whatsapp.net", "text": f"DR{3000000 + n}"}
                    for n in range(start, min(start + chunk, first + count))]
            async with http.post(f"{sim}/sim/inject", json=body) as response:
                response.raise_for_status()


async def _health_ok(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(f"{url}/api/health") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def _send_latencies(url: str, count: int) -> list[float]:
    latencies = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:
        for n in range(count + 20):
            started = time.perf_counter()
            async with http.post(f"{url}/api/send", json={"recipient": GROUPS[0], "message": f"DR{4000000 + n} received",
                                                          "mentions": ["27710000001"]}) as response:
                await response.read()
                assert response.status == 200, response.status
            if n >= 20:  # warm-up excluded
                latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def _connected_at(db: Path) -> float:
    """When the bridge recorded its connection (epoch seconds, its own clock = ours)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        connected = conn.execute("SELECT MIN(at) FROM connection_events WHERE kind = 'connected'").fetchone()[0]
    finally:
        conn.close()
    return datetime.fromisoformat(connected).timestamp()


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def run(messages: int, sends: int, workdir: Path) -> list[tuple[str, str, str, bool]]:
    config = workdir / "wa.toml"
    config.write_text(CONFIG, encoding="utf-8")
    data = workdir / "data"
    db = data / "accounts/main/messages.db"
    started: list[subprocess.Popen] = []
    try:
        started.append(_start(config, "sim", log=workdir / "sim.log"))
        sim = endpoints.wait_url(data, "sim", timeout=20)
        asyncio.run(_inject(sim, messages))

        t0 = time.monotonic()
        bridge = _start(config, "bridge", "--account", "main", log=workdir / "bridge.log")
        started.append(bridge)
        url = _wait(lambda: endpoints.url(data, "bridge:main"), 20, "the bridge API", 0.001)

        async def connected() -> float:
            async with aiohttp.ClientSession() as http:
                while not await _health_ok(http, url):
                    await asyncio.sleep(0.001)
            return time.monotonic()
        t_connected = asyncio.run(connected())
        _wait(lambda: _stored(db) >= messages, 120, f"{messages} messages stored")
        ingest_s = time.time() - _connected_at(db)
        rate = messages / ingest_s
        live_started = time.monotonic()
        asyncio.run(_inject(sim, messages, first=messages))
        _wait(lambda: _stored(db) >= 2 * messages, 120, f"{messages} live messages stored")
        live_s = time.monotonic() - live_started
        live_rate = messages / live_s
        latencies = asyncio.run(_send_latencies(url, sends))
    finally:
        for proc in reversed(started):
            _stop(proc)
    p50, p95, p99 = (_percentile(latencies, p) for p in (50, 95, 99))
    return [
        ("ingest: offline queue -> committed", f"{messages} messages in {ingest_s:.3f} s",
         f"{rate:,.0f} msg/s (target >= 2,000)", rate >= 2000),
        ("ingest: live, bulk-posted while connected", f"{messages} messages in {live_s:.3f} s (post -> committed)",
         f"{live_rate:,.0f} msg/s (target >= 2,000)", live_rate >= 2000),
        ("cold start: exec -> health 200", f"{(t_connected - t0) * 1000:.0f} ms", "", True),
        ("/api/send latency", f"{sends} sequential sends", f"p50 {p50:.1f} ms · p95 {p95:.1f} ms · p99 {p99:.1f} ms "
         f"(target p99 < 20 ms)", p99 < 20),
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench bridge", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sends", type=int, default=500)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        results = run(args.messages, args.sends, Path(tmp))
    print("| measure | run | result | target met |")
    print("|---|---|---|---|")
    for measure, detail, result, ok in results:
        print(f"| {measure} | {detail} | {result} | {'yes' if ok else 'NO'} |")
    return 0 if all(ok for *_, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
