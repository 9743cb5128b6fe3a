"""`scripts/bench inputs`: what hostile or careless inputs cost a real bridge (issue 9), side by side in one run.

For each input, a client sends it (repeatedly) while a second client polls
`/api/health` on fresh connections; reported: the answer and its time, and
the health latency p50/p99 meanwhile as a ratio to the idle baseline measured
first in the same run. Inputs: 10,000 mentions (used to stall the loop 0.8 s),
1,024 mentions (the limit, accepted and sent), a sparse 2 GB video (used to be
read and encoded on the loop: RSS 5.4 GB, bridge killed), a 16 MB video (the
limit: read and encoded in a thread, sent), JSON nested 100,000 deep, and 300
idle connections (above the 256 cap: shed with 503).

Real processes on free ports in a temporary directory, ended by pid.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import tempfile
import time
from pathlib import Path

import aiohttp

from scripts.benchmarks.bridge_bench import CONFIG, GROUPS, _percentile, _start, _stop, _wait
from watchdog.shared import endpoints

MENTIONS = [str(27700000000 + n) for n in range(10_000)]


async def _health_latencies(url: str, stop: asyncio.Event) -> list[float]:
    latencies = []
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            started = time.perf_counter()
            async with http.get(f"{url}/api/health", headers={"Connection": "close"}) as response:
                await response.read()
            latencies.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.01)
    return latencies


async def _measure(url: str, name: str, body: bytes | None, repeat: int) -> tuple[str, str, float, float, float]:
    """(input, answers, answer ms p50, health p50, health p99) while `body` is posted `repeat` times."""
    stop = asyncio.Event()
    poller = asyncio.create_task(_health_latencies(url, stop))
    statuses: dict[int, int] = {}
    times = []
    async with aiohttp.ClientSession() as http:
        for _ in range(repeat):
            started = time.perf_counter()
            if body is None:
                await asyncio.sleep(0.2)  # idle baseline
            else:
                async with http.post(f"{url}/api/send", data=body,
                                     headers={"Content-Type": "application/json"}) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
            times.append((time.perf_counter() - started) * 1000)
    stop.set()
    health = await poller
    answers = ", ".join(f"{n}x {status}" for status, n in sorted(statuses.items())) or "-"
    return name, answers, _percentile(times, 50), _percentile(health, 50), _percentile(health, 99)


async def _flood(url: str, port: int) -> tuple[str, str, float, float, float]:
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
    try:
        await asyncio.sleep(0.2)
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status = (await reader.readline()).split()[1].decode()
        writer.close()
        shed_ms = (time.perf_counter() - started) * 1000
    finally:
        for sock in idle:
            sock.close()
    return "300 idle connections, then a new client", f"{status} (shed)", shed_ms, float("nan"), float("nan")


def run(workdir: Path, repeat: int) -> list[tuple[str, str, float, float, float]]:
    config = workdir / "wa.toml"
    config.write_text(CONFIG, encoding="utf-8")
    data = workdir / "data"
    media = data / "media"
    media.mkdir(parents=True)
    with open(media / "huge.mp4", "wb") as f:
        f.truncate(2 * 1024**3)
    (media / "limit.mp4").write_bytes(b"\0" * (16 * 1024 * 1024))
    started = []
    try:
        started.append(_start(config, "sim", log=workdir / "sim.log"))
        endpoints.wait_url(data, "sim", timeout=20)
        started.append(_start(config, "bridge", "--account", "main", log=workdir / "bridge.log"))
        url = _wait(lambda: endpoints.url(data, "bridge:main"), 20, "the bridge API")
        port = int(url.rsplit(":", 1)[1])

        def send(**fields: object) -> bytes:
            return json.dumps({"recipient": GROUPS[0], "message": "DR1734150", **fields}).encode()

        async def all_inputs() -> list[tuple[str, str, float, float, float]]:
            async with aiohttp.ClientSession() as http:
                while True:
                    async with http.get(f"{url}/api/health") as response:
                        if response.status == 200:
                            break
                    await asyncio.sleep(0.05)
            return [
                await _measure(url, "idle (baseline)", None, repeat),
                await _measure(url, "10,000 mentions (840 KB)", send(mentions=MENTIONS), repeat),
                await _measure(url, "1,024 mentions (the limit)", send(mentions=MENTIONS[:1024]), repeat),
                await _measure(url, "2 GB sparse video", send(media_path="huge.mp4"), repeat),
                await _measure(url, "16 MB video (the limit), sent", send(media_path="limit.mp4"), 3),
                await _measure(url, "JSON nested 100,000 deep", b"[" * 100_000, repeat),
                await _flood(url, port),
            ]
        return asyncio.run(all_inputs())
    finally:
        for proc in reversed(started):
            _stop(proc)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench inputs", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="inputs-bench-") as tmp:
        results = run(Path(tmp), args.repeat)
    base_p99 = results[0][4]
    print("| input | answers | answer p50 | health p50 | health p99 | p99 vs idle |")
    print("|---|---|---|---|---|---|")
    for name, answers, answer_ms, p50, p99 in results:
        ratio = f"{p99 / base_p99:.1f}x" if p99 == p99 else "-"
        health = (f"{p50:.1f} ms", f"{p99:.1f} ms") if p99 == p99 else ("-", "-")
        print(f"| {name} | {answers} | {answer_ms:.1f} ms | {health[0]} | {health[1]} | {ratio} |")
    return 0
