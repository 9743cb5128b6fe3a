"""`wa-watchdog drops-api` as a real process: drops, feedback into the group, receipts, signed webhooks, errors."""
from __future__ import annotations

import base64
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.schema import format_ts, parse_ts
from monitors.api.webhooks import SAFETY_INTERVAL
from monitors.drops_store import Submission, open_drops_store
from scripts.benchmarks.system_run import CONTRACTORS, RunningSystem, config_text, group_jid, slow_start
from scripts.benchmarks.webhook_receiver import WebhookReceiver
from tests.bridge_support import SENDER, call, inject, start_bridge, start_sim
from tests.conftest import BASE_CONFIG, GROUP_A, ROOT, Processes, wait_until
from tests.contracts import webhook_event_problems
from tests.monitor_support import start_monitor
from tests.pg import PgCluster, free_port
from watchdog.shared import endpoints
from watchdog.components import load

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
TOKEN = "drops-api-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def api_config(backend: str = "", hook_url: str = "", extra: str = "", start_at: str = "now") -> str:
    hook = (f'\n[[webhooks]]\nname = "qa"\nurl = "{hook_url}"\nsecret = "{SECRET}"\nbackoff_initial = 0.05\n'
            f'backoff_max = 0.5\nmax_attempts = 1000\nstart_at = "{start_at}"\n' if hook_url else "")
    return BASE_CONFIG + backend + f'\n[drops_api]\nenabled = true\ntoken = "{TOKEN}"\n' + hook + extra


def start_api(procs: Processes, data_dir: Path) -> str:
    proc = procs.start("drops-api", stdout=subprocess.DEVNULL, stderr=open(data_dir.parent / "drops-api.log", "ab"))
    return wait_until(lambda: (r := endpoints.read(data_dir, "drops-api")) and r["pid"] == proc.pid
                      and r["endpoints"]["api"], timeout=15, message="drops-api to publish its URL")


def get(url: str, headers: dict[str, str] = AUTH) -> tuple[int, object]:
    return call("GET", url, headers=headers)


def post(url: str, body: object, headers: dict[str, str] | None = None) -> tuple[int, object]:
    return call("POST", url, body, headers={**AUTH, **(headers or {})})


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(SECRET, script=[500, 429])
    yield server
    server.close()


@pytest.mark.slow
def test_drop_feedback_receipts_and_webhooks_end_to_end(write_config, drops_backend: str,
                                                         receiver: WebhookReceiver) -> None:
    port = free_port()  # the receiver is down until the end
    config_path = write_config(api_config(drops_backend, f"http://127.0.0.1:{port}/hook"))
    data_dir = config_path.parent / "data"
    procs = Processes(config_path)
    try:
        _, sim = start_sim(procs, data_dir)
        start_bridge(procs, data_dir)
        start_monitor(procs, "lawley")
        api = start_api(procs, data_dir)
        inject(sim, "DR1234567 installed", GROUP_A)

        drops = wait_until(lambda: get(f"{api}/api/drops?project=lawley")[1]["drops"], message="the drop listed")
        (drop,) = drops
        assert drop["drop_number"] == "DR1234567" and drop["submitted_by"] == SENDER
        assert str(uuid.UUID(drop["id"])) == drop["id"] and parse_ts(drop["message_time"]).tzinfo is not None
        detail_url = f"{api}/api/drops/{drop['id']}"

        def ack_delivered() -> dict | None:
            detail = get(detail_url)[1]
            return detail if detail["feedback"] and detail["feedback"][0]["delivered_at"] else None
        detail = wait_until(ack_delivered, message="the acknowledgement sent and delivered")
        assert detail["feedback"][0]["kind"] == "ack" and detail["feedback"][0]["status"] == "sent"
        wait_until(lambda: get(detail_url)[1]["feedback"][0]["server_at"], message="the server ack on the ack")
        assert [s["kind"] for s in detail["submissions"]] == ["submitted"] and detail["feedback_sent_at"]

        status, body = post(f"{detail_url}/feedback", {"message": "needs correction"}, {"Idempotency-Key": "qa-1"})
        assert status == 200, body
        feedback = body["feedback"]
        assert feedback["status"] == "sent" and feedback["text"] == "@27710000001 DR1234567 - needs correction"
        sent = [s for s in call("GET", f"{sim}/sim/sent")[1] if s["text"] == feedback["text"]]
        assert len(sent) == 1 and sent[0]["recipient"] == GROUP_A and sent[0]["mentioned_jids"] == [SENDER]
        status, again = post(f"{detail_url}/feedback", {"message": "needs correction"}, {"Idempotency-Key": "qa-1"})
        same = ("id", "status", "text", "sent_at", "created_at")  # the retry: the first result, nothing sent twice
        assert status == 200 and [again["feedback"][k] for k in same] == [feedback[k] for k in same], again
        status, conflict = post(f"{detail_url}/feedback", {"message": "other"}, {"Idempotency-Key": "qa-1"})
        assert status == 409 and "qa-1" in conflict["error"]
        status, by_number = post(f"{api}/api/feedback", {"project": "lawley", "drop_number": "dr1234567",
                                                         "message": "photo of the pole missing"})
        assert status == 200 and by_number["drop"]["id"] == drop["id"], by_number
        assert len([s for s in call("GET", f"{sim}/sim/sent")[1] if "DR1234567 -" in s["text"]]) == 2

        assert call("POST", f"{sim}/sim/read", {"id": sent[0]["id"], "reader": SENDER})[0] == 200

        def read() -> bool:
            return any(f["id"] == feedback["id"] and f["read_at"] for f in get(detail_url)[1]["feedback"])
        wait_until(read, message="the contractor's read receipt on the feedback row")

        receiver.start(port)  # back after being down: every event arrives, each exactly once by id
        expected = Counter({"drop.recorded": 1, "feedback.sent": 3, "feedback.delivered": 3, "feedback.read": 1})
        wait_until(lambda: Counter(e["type"] for e in receiver.events().values()) == expected, timeout=20,
                   message=f"the webhook events {dict(expected)}")
        assert set(receiver.accepted().values()) == {1} and receiver.bad_signatures == 0
        spec = json.loads((ROOT / "watchdog/openapi/drops-api.json").read_text())
        problems = [webhook_event_problems(spec, event) for event in receiver.events().values()]
        assert not any(problems), problems  # as documented, times RFC 3339 like the REST answers
        assert [r.status for r in receiver.requests[:2]] == [500, 429]  # retried with the same webhook-id
        read_event = next(e for e in receiver.events().values() if e["type"] == "feedback.read")
        assert read_event["data"]["drop"]["id"] == drop["id"] and read_event["data"]["feedback"]["read_at"]

        health = wait_until(lambda: (h := get(f"{api}/api/health")[1]) and h["webhooks"]["qa"]["pending"] == 0
                            and h, message="the outbox drained")
        assert health["webhooks"]["qa"]["delivered"] == 8 and health["webhooks"]["qa"]["dead"] == 0
        metrics = call_text(f"{api}/metrics")
        assert 'wa_watchdog_webhook_delivered{webhook="qa"} 8.0' in metrics
        assert 'wa_watchdog_webhook_pending{webhook="qa"} 0.0' in metrics
    finally:
        procs.stop_all()


def call_text(url: str) -> str:
    request = urllib.request.Request(url, headers=AUTH)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def looks(api: str) -> int:
    """The deliverer's looks at the outbox since it started (/metrics)."""
    match = re.search(r"^wa_watchdog_webhook_looks_total (\S+)$", call_text(f"{api}/metrics"), re.M)
    assert match, "no wa_watchdog_webhook_looks_total on /metrics"
    return int(float(match.group(1)))


def delivery_after_a_look(api: str, config_path: Path, receiver: WebhookReceiver, count: int) -> float:
    """Record the `count`-th drop right after a look at the outbox; seconds from its commit to its webhook.

    A store change that does not wake the deliverer waits for the next safety look, about a second later."""
    before = looks(api)
    wait_until(lambda: looks(api) > before, timeout=5, interval=0.005, message="a look at the outbox")
    record_drops(config_path, count)
    committed = time.time()
    wait_until(lambda: len(receiver.accepted()) == count, timeout=10, message=f"webhook {count}")
    return max(r.at for r in receiver.requests) - committed


def record_drops(config_path: Path, count: int) -> None:
    """Drops straight into the store, one minute apart, as a monitor records them (no bridge, no feedback)."""
    drops = open_drops_store(load(config_path))
    try:
        base = parse_ts("2026-11-24 08:00:00.000000+00:00")
        subs = [Submission(f"DR{7000000 + n}", GROUP_A, "Lawley Fibre", SENDER, f"M{n}",
                           format_ts(base.replace(minute=n)), n % 2 == 0) for n in range(count)]
        drops.record("lawley", "main", count, subs, None)
    finally:
        drops.close()


@pytest.mark.slow
def test_paging_filters_and_every_bad_request_answered_by_name(write_config) -> None:
    config_path = write_config(api_config())
    data_dir = config_path.parent / "data"
    record_drops(config_path, 7)
    procs = Processes(config_path)
    try:
        api = start_api(procs, data_dir)
        pages, cursor = [], ""
        while True:
            status, page = get(f"{api}/api/drops?limit=3" + (f"&cursor={cursor}" if cursor else ""))
            assert status == 200, page
            pages.append([d["drop_number"] for d in page["drops"]])
            assert page["has_more"] == (page["next_cursor"] is not None)
            if not (cursor := page["next_cursor"]):
                break
        assert pages == [["DR7000006", "DR7000005", "DR7000004"], ["DR7000003", "DR7000002", "DR7000001"],
                         ["DR7000000"]]
        status, page = get(f"{api}/api/drops?since=2026-11-24T08:02:00Z&until=2026-11-24T10:05:00%2B02:00"
                           "&backfilled=true&feedback=none")
        assert status == 200 and [d["drop_number"] for d in page["drops"]] == ["DR7000004", "DR7000002"]
        for query in ("drop_number=DR7000003", "drop_number=dr7000003&project=lawley"):  # a drop by its number
            status, page = get(f"{api}/api/drops?{query}")
            assert status == 200 and [d["drop_number"] for d in page["drops"]] == ["DR7000003"], page
            assert page["has_more"] is False and page["next_cursor"] is None
        assert get(f"{api}/api/drops?drop_number=DR9999999")[1]["drops"] == []

        huge_id = base64.urlsafe_b64encode(json.dumps(["2026-11-24 08:00:00.000000+00:00", 2**70]).encode()).decode()
        for query, expected, key in [  # 400 malformed; 404 well formed but naming nothing we hold
                ("limit=0", 400, "limit"), ("limit=x", 400, "limit"), ("limit=%C2%B2", 400, "limit"),  # '²'.isdigit()
                ("limit=" + "9" * 5000, 400, "limit"), ("since=yesterday", 400, "since"),
                ("until=2026-11-24T08:00:00", 400, "until"), ("backfilled=maybe", 400, "backfilled"),
                ("feedback=done", 400, "feedback"), ("colour=red", 400, "colour"), ("until=", 400, "until"),
                ("project=", 400, "project"), ("project=nope", 404, "project"), ("cursor=garbage", 404, "cursor"),
                (f"cursor={huge_id}", 404, "cursor"), ("cursor=" + "W1tb" * 1500, 404, "cursor"),
                ("drop_number=", 400, "drop_number"), ("drop_number=DR%00", 400, "drop_number"),
                (f"drop_number={'9' * 65}", 400, "drop_number")]:
            status, body = get(f"{api}/api/drops?{query}")
            assert status == expected and body["error"].startswith(f"{key}: "), (query[:40], body)
        drop_id = get(f"{api}/api/drops?limit=1")[1]["drops"][0]["id"]
        for missing in ("not-a-uuid", str(uuid.uuid4())):
            assert get(f"{api}/api/drops/{missing}")[0] == 404
            assert post(f"{api}/api/drops/{missing}/feedback", {"message": "x"})[0] == 404
        for body, words in [({}, "message: "), ({"message": "  "}, "message: "), ([], "body: "),
                            ({"message": "x" * 5000}, "message: "), ({"message": "a\x00"}, "message contains a NUL"),
                            ({"message": "x", "urgent": True}, "urgent: unknown field (known: message)")]:
            status, answer = post(f"{api}/api/drops/{drop_id}/feedback", body)
            assert status == 400 and answer["error"].startswith(words), (body, answer)
        status, answer = call("POST", f"{api}/api/drops/{drop_id}/feedback", raw=b"{nope",
                              headers={**AUTH, "Content-Type": "application/json"})
        assert status == 400, answer
        assert post(f"{api}/api/feedback", {"project": "nope", "drop_number": "DR1", "message": "x"})[0] == 404
        assert post(f"{api}/api/feedback", {"project": "", "drop_number": "DR1", "message": "x"})[0] == 400
        assert post(f"{api}/api/feedback", {"project": "lawley", "drop_number": "DR1", "message": "x"})[0] == 404
        # No bridge is running: recorded, answered 202, left pending for the monitor to send.
        status, answer = post(f"{api}/api/drops/{drop_id}/feedback", {"message": "needs correction"})
        assert status == 202 and answer["feedback"]["status"] == "pending", answer

        assert get(f"{api}/api/drops", headers={})[0] == 401
        assert get(f"{api}/api/drops", headers={"Authorization": "Bearer wrong"})[0] == 401
        status, _ = call("POST", f"{api}/api/drops/{drop_id}/feedback", raw=b'{"message": "x"}',
                         headers={**AUTH, "Content-Type": "text/plain"})
        assert status == 415  # a page's "simple" request
        assert post(f"{api}/api/drops/{drop_id}/feedback", {"message": "x"}, {"Origin": "https://evil.example"})[0] == 403

        status, document = get(f"{api}/openapi.json")
        assert status == 200 and document == json.loads((ROOT / "watchdog/openapi/drops-api.json").read_text())
        (server,) = document["servers"]  # names the API it was served by (not the watchdog's control port)
        assert urllib.parse.urljoin(f"{api}/openapi.json", server["url"]).rstrip("/") == api
    finally:
        procs.stop_all()


@pytest.mark.slow
def test_dead_events_are_alerted_once_and_shown(write_config, receiver: WebhookReceiver) -> None:
    receiver.script = [404, 404]  # final at once, whatever max_attempts says
    receiver.start()
    alerts = f'\n[[alerts]]\nurl = "http://127.0.0.1:{free_port()}/alert"\nrules = ["webhook_dead"]\n'
    config_path = write_config(api_config(hook_url=receiver.url, extra=alerts, start_at="oldest"))
    data_dir = config_path.parent / "data"
    record_drops(config_path, 2)
    procs = Processes(config_path)
    try:
        api = start_api(procs, data_dir)
        health = wait_until(lambda: (h := get(f"{api}/api/health")[1]) and h["webhooks"]["qa"]["dead"] == 2 and h,
                            message="both events dead")
        assert health["webhooks"]["qa"]["pending"] == 0 and "HTTP 404" in health["webhooks"]["qa"]["last_error"]
        assert [r.status for r in receiver.requests] == [404, 404]  # final: never retried
        records = [json.loads(line) for line in (data_dir / "recoveries.jsonl").read_text().splitlines()]
        alerts_sent = [r for r in records if r.get("event") == "alert" and r.get("rule") == "webhook_dead"]
        assert len(alerts_sent) == 1 and alerts_sent[0]["component"] == "drops-api:qa", alerts_sent
        assert 'wa_watchdog_webhook_dead{webhook="qa"} 2.0' in call_text(f"{api}/metrics")
    finally:
        procs.stop_all()


@pytest.mark.slow
def test_disabled_or_misconfigured_exits_2_naming_the_key(write_config) -> None:
    for text, key in [(BASE_CONFIG, "enabled = false"), (api_config(extra='\n[drops_api.x]\n'), "drops_api.x")]:
        config_path = write_config(text)
        result = subprocess.run([sys.executable, "-m", "watchdog.cli", "drops-api", "--config", str(config_path)],
                                cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert result.returncode == 2 and key in result.stderr, result.stderr


@pytest.mark.slow
def test_supervised_by_the_watchdog_with_webhook_depth_in_status(tmp_path: Path, receiver: WebhookReceiver) -> None:
    receiver.script = []
    receiver.start()
    hook = f'\n[drops_api]\nenabled = true\n\n[[webhooks]]\nname = "qa"\nurl = "{receiver.url}"\nsecret = "{SECRET}"\n'
    system = RunningSystem(tmp_path, slow_start(config_text(1)) + hook)
    system.start()  # every component healthy: drops-api sent READY=1
    try:
        def api_status() -> str:
            item = next((c for c in system.status() if c["name"] == "drops-api"), None)
            return item["status_text"] if item else ""
        wait_until(lambda: "webhooks qa 0 pending 0 dead" in api_status(), message="the drops-api status line")
        system.inject(group_jid(1), CONTRACTORS[0], "DR7654321 installed")
        wait_until(lambda: any(e["data"]["drop"]["drop_number"] == "DR7654321" for e in receiver.events().values()
                               if e["type"] == "drop.recorded"), message="the drop.recorded webhook")
    finally:
        assert system.stop() == 0


@pytest.mark.slow
def test_an_idle_deliverer_sleeps_and_a_new_event_wakes_it(write_config, drops_backend: str,
                                                            receiver: WebhookReceiver) -> None:
    receiver.script = []
    receiver.start()
    config_path = write_config(api_config(drops_backend, receiver.url))
    procs = Processes(config_path)
    try:
        data_dir = config_path.parent / "data"
        api = start_api(procs, data_dir)
        start, began = looks(api), time.monotonic()
        with open(data_dir / "recoveries.jsonl", "a") as other:  # the idle window measured: 3 s, in which
            while time.monotonic() < began + 3.0:  # other files of drops.db's directory are written: no wake
                other.write("{}\n")
                other.flush()
                time.sleep(0.05)
        idle, seconds = looks(api) - start, time.monotonic() - began
        assert idle <= seconds / SAFETY_INTERVAL + 2, f"{idle} looks in {seconds:.1f} s idle"  # polled: 150
        for count in (1, 2, 3):  # (nothing woke it: by chance under the safety look in 1 of 2 each)
            latency = delivery_after_a_look(api, config_path, receiver, count)
            assert latency < SAFETY_INTERVAL / 2, f"event {count}: {latency:.3f} s from commit to webhook"
    finally:
        procs.stop_all()


@pytest.mark.slow
def test_postgres_down_is_a_503_and_the_outbox_waits_then_wakes_the_deliverer_again(
        write_config, pg_cluster: PgCluster, pg_url: str, receiver: WebhookReceiver) -> None:
    receiver.script = []
    receiver.start()
    config_path = write_config(api_config(f'\n[database]\nurl = "{pg_url}"\n', receiver.url, start_at="oldest"))
    data_dir = config_path.parent / "data"
    record_drops(config_path, 3)
    procs = Processes(config_path)
    try:
        api = start_api(procs, data_dir)
        wait_until(lambda: len(receiver.accepted()) == 3, message="the three drop.recorded events")
        pg_cluster.stop("immediate")
        try:
            status, body = get(f"{api}/api/drops")
            assert status == 503 and "drops store unavailable" in body["error"], body
        finally:
            pg_cluster.start()
        record_drops(config_path, 5)  # two more (the first three are there): two more events
        wait_until(lambda: get(f"{api}/api/drops")[0] == 200 and len(receiver.accepted()) == 5, timeout=30,
                   message="the API and the deliverer back after PostgreSQL")
        # At least once: a delivery whose `delivered` mark died with PostgreSQL is posted again, with the
        # same webhook-id, so a receiver that dedupes on it (this one) counts each event once.
        numbers = sorted(e["data"]["drop"]["drop_number"] for e in receiver.events().values())
        assert numbers == [f"DR{7000000 + n}" for n in range(5)]
        latencies: list[float] = []

        def woken_at_once() -> bool:  # the deliverer LISTENs again (after its backoff): no more waits for a look
            latencies.append(delivery_after_a_look(api, config_path, receiver, len(latencies) + 6))
            return latencies[-1] < SAFETY_INTERVAL / 2
        wait_until(woken_at_once, timeout=30, message="a notification after the restart")
    finally:
        procs.stop_all()


@pytest.mark.slow
def test_feedback_the_bridge_refuses_is_a_502_and_a_feedback_failed_event(write_config,
                                                                          receiver: WebhookReceiver) -> None:
    receiver.script = []
    receiver.start()
    config_path = write_config(api_config(hook_url=receiver.url))
    data_dir = config_path.parent / "data"
    drops = open_drops_store(load(config_path))
    try:  # a drop in a group this number is not in (the simulator knows no such group): WhatsApp refuses
        drops.record("lawley", "main", 1, [Submission("DR7100000", "120363000000000099@g.us", "Gone", SENDER, "M1",
                                                      "2026-11-24 08:00:00.000000+00:00", False)], None)
    finally:
        drops.close()
    procs = Processes(config_path)
    try:
        start_sim(procs, data_dir)
        start_bridge(procs, data_dir)
        api = start_api(procs, data_dir)
        drop_id = get(f"{api}/api/drops")[1]["drops"][0]["id"]
        status, body = post(f"{api}/api/drops/{drop_id}/feedback", {"message": "needs correction"})
        assert status == 502 and body["feedback"]["status"] == "failed" and body["feedback"]["error"], body
        assert body["drop"]["feedback_status"] == "failed"
        wait_until(lambda: any(e["type"] == "feedback.failed" for e in receiver.events().values()),
                   message="the feedback.failed webhook")
    finally:
        procs.stop_all()


@pytest.mark.slow
def test_a_drops_store_newer_than_this_release_exits_2(write_config) -> None:
    config_path = write_config(api_config())
    record_drops(config_path, 1)
    conn = sqlite3.connect(config_path.parent / "data" / "drops.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    result = subprocess.run([sys.executable, "-m", "watchdog.cli", "drops-api", "--config", str(config_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "schema version 99" in result.stderr, result.stderr


@pytest.mark.slow
def test_a_webhook_added_later_starts_at_the_current_event_unless_it_asks_for_the_oldest(
        write_config, drops_backend: str) -> None:
    late, replay = WebhookReceiver(SECRET), WebhookReceiver(SECRET)
    try:
        late.start()
        replay.start()
        hooks = (f'\n[[webhooks]]\nurl = "{late.url}"\nsecret = "{SECRET}"\n'  # no name: derived from the URL
                 f'\n[[webhooks]]\nname = "replay"\nurl = "{replay.url}"\nsecret = "{SECRET}"\nstart_at = "oldest"\n')
        config_path = write_config(api_config(drops_backend, extra=hooks))
        data_dir = config_path.parent / "data"
        record_drops(config_path, 2)  # the history before the webhooks were added
        procs = Processes(config_path)
        try:
            api = start_api(procs, data_dir)
            record_drops(config_path, 3)  # one more: DR7000002
            wait_until(lambda: len(replay.accepted()) == 3 and len(late.accepted()) == 1,
                       message="the new event at both, the history at the one that asked for it")
            assert sorted(e["data"]["drop"]["drop_number"] for e in replay.events().values()) == [
                "DR7000000", "DR7000001", "DR7000002"]
            assert [e["data"]["drop"]["drop_number"] for e in late.events().values()] == ["DR7000002"]
            name = f"127.0.0.1-{late.port}-hook"
            assert set(get(f"{api}/api/health")[1]["webhooks"]) == {name, "replay"}
        finally:
            procs.stop_all()
        procs = Processes(config_path)  # a restart: each keeps its place, nothing is sent again
        try:
            api = start_api(procs, data_dir)
            record_drops(config_path, 4)
            wait_until(lambda: len(replay.accepted()) == 4 and len(late.accepted()) == 2, message="DR7000003 at both")
            assert set(replay.accepted().values()) == set(late.accepted().values()) == {1}
            assert get(f"{api}/api/health")[1]["webhooks"][name]["pending"] == 0
        finally:
            procs.stop_all()
    finally:
        late.close()
        replay.close()


@pytest.mark.slow
def test_a_taken_port_means_a_free_one_only_with_port_fallback(write_config) -> None:
    with socket.socket() as taken:  # the pinned port (the demo's 8091) held by something else
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config_path = write_config(api_config(extra=f"port = {port}\n"))
        result = subprocess.run([sys.executable, "-m", "watchdog.cli", "drops-api", "--config", str(config_path)],
                                cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert result.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in result.stderr, result.stderr
        config_path = write_config(api_config(extra=f"port = {port}\nport_fallback = true\n"))
        data_dir = config_path.parent / "data"
        procs = Processes(config_path)
        try:
            api = start_api(procs, data_dir)
            assert api != f"http://127.0.0.1:{port}" and get(f"{api}/api/health")[0] == 200
            log = (config_path.parent / "drops-api.log").read_text()
            assert f"drops_api.port {port} is taken: serving on free port {api.rsplit(':', 1)[1]}" in log
        finally:
            procs.stop_all()


@pytest.mark.slow
def test_a_nul_character_is_a_400_naming_the_field_on_both_stores(write_config, drops_backend: str) -> None:
    """PostgreSQL refuses NUL in text: refused by name before the store sees it, on drops.db alike."""
    config_path = write_config(api_config(drops_backend))
    record_drops(config_path, 1)
    procs = Processes(config_path)
    try:
        api = start_api(procs, config_path.parent / "data")
        drop_id = get(f"{api}/api/drops")[1]["drops"][0]["id"]
        by_id = f"{api}/api/drops/{drop_id}/feedback"
        for url, body, field in [(by_id, {"message": "needs\u0000correction"}, "message"),
                                 (f"{api}/api/feedback", {"project": "lawley", "drop_number": "DR7000000",
                                                          "message": "a\u0000b"}, "message"),
                                 (f"{api}/api/feedback", {"project": "lawley", "drop_number": "DR7\u0000",
                                                          "message": "x"}, "drop_number")]:
            status, answer = post(url, body)
            assert status == 400 and answer["error"].startswith(f"{field} "), (body, status, answer)  # web_guard
        status, answer = get(f"{api}/api/drops?drop_number=DR7%00")
        assert status == 400 and answer["error"].startswith("drop_number: "), answer
        assert get(f"{api}/api/drops/{drop_id}")[1]["feedback"] == []  # nothing recorded
    finally:
        procs.stop_all()


@pytest.mark.slow
def test_a_second_drops_api_on_one_data_directory_is_refused(write_config) -> None:
    config_path = write_config(api_config())
    data_dir = config_path.parent / "data"
    procs = Processes(config_path)
    try:
        url = start_api(procs, data_dir)
        first = endpoints.read(data_dir, "drops-api")["pid"]
        second = subprocess.run([sys.executable, "-m", "watchdog.cli", "drops-api", "--config", str(config_path)],
                                cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert second.returncode == 1, second.stderr
        assert f"another drops-api (pid {first}) already serves {data_dir} at {url}" in second.stderr
        assert endpoints.read(data_dir, "drops-api")["pid"] == first  # the running one stays findable
        assert get(f"{url}/api/health")[0] == 200
    finally:
        procs.stop_all()
