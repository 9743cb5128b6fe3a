"""The bridge API refuses what a browser page on the host can forge, and every error is JSON in
whatsapp-mcp's shape; nothing is queued or sent for a refused request."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.bridge_support import call, rows, sent, start_bridge, start_sim
from tests.conftest import GROUP_A, Processes, wait_until
from watchdog.shared.http_server import MAX_CONNECTIONS

pytestmark = pytest.mark.slow  # real sim and bridge processes


def test_forged_sends_are_refused_and_nothing_is_queued(procs: Processes, data_dir: Path) -> None:
    _, sim = start_sim(procs, data_dir)
    _, url = start_bridge(procs, data_dir)
    port = url.rsplit(":", 1)[1]
    body = b'{"recipient": "%s", "message": "forged"}' % GROUP_A.encode()
    forgeries = [
        ({"Content-Type": "text/plain"}, 415, "text/plain"),  # fetch(url, {method: "POST", body}) in no-cors mode
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "application/json"),  # <form method=post>
        ({"Content-Type": "application/json", "Origin": "null"}, 403, "Origin: null"),  # sandboxed iframe
        ({"Content-Type": "application/json", "Origin": "http://evil.example"}, 403, "not allowed"),
        ({"Content-Type": "application/json", "Host": f"rebound.evil.example:{port}"}, 403, "DNS-rebinding"),
        ({"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, 403, "cross-site"),
    ]
    for path in ("/api/send", "/send-message", "/api/download"):
        for headers, status, words in forgeries:
            got, answer = call("POST", f"{url}{path}", raw=body, headers=headers)
            assert got == status and answer["success"] is False and words in answer["message"], (path, headers, answer)
    assert sent(sim) == [] and rows(data_dir, "SELECT COUNT(*) FROM outbox") == [(0,)]

    got, answer = call("GET", f"{url}/api/send")
    assert (got, answer) == (405, {"success": False, "message": "method GET not allowed on /api/send (allowed: POST)"})
    got, answer = call("POST", f"{url}/api/send", {"recipient": GROUP_A, "message": "x" * 2_000_000})
    assert got == 413 and answer["success"] is False and "1048576" in answer["message"]
    got, answer = call("POST", f"{url}/api/send", raw=b"[" * 100_000)
    assert got == 400 and "nested deeper" in answer["message"]
    # whatsapp-mcp's client: requests.post(url, json=...) -> application/json, no Origin
    assert call("POST", f"{url}/api/send", {"recipient": GROUP_A, "message": "real"})[0] == 200
    assert [s["text"] for s in sent(sim)] == ["real"]


def test_a_connection_flood_is_shed_with_503_and_the_bridge_recovers(procs: Processes, data_dir: Path) -> None:
    """1,100 idle connections used to exhaust the descriptors: now those above the cap get 503 at once."""
    start_sim(procs, data_dir)
    _, url = start_bridge(procs, data_dir)
    port = int(url.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS)]
    try:
        def shed() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
                extra.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                return extra.recv(4096).startswith(b"HTTP/1.1 503")
        wait_until(shed, message="a connection above the cap answered 503")
    finally:
        for sock in idle:
            sock.close()
    wait_until(lambda: call("GET", f"{url}/api/health")[0] == 200, message="the bridge serving new clients again")
