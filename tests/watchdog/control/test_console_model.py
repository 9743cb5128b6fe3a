"""The console's model without a browser: incidents from the recovery log, the timeline SVG, the record cache."""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest

from bridge.console_view import EVENTS as BRIDGE_EVENTS
from monitors.console_view import EVENTS as DROPS_EVENTS
from watchdog.control.console import timeline
from watchdog.control.console.events import merged
from watchdog.control.console.incidents import incidents
from watchdog.control.console.records import RecordCache
from watchdog.shared.recovery_log import RecoveryLog
from watchdog.shared import clock

GROUP = "120363000000000001@g.us"
T0 = 1_796_000_000.0
EVENTS = merged([BRIDGE_EVENTS, DROPS_EVENTS])  # what the product's views declare (bridge/ and monitors/console_view.py)


def crash_and_backfill(t: float = T0) -> list[dict]:
    """What a real kill -9 of a bridge with a warm standby leaves in the recovery log, and the backfill after."""
    def r(dt: float, component: str, event: str, **fields: object) -> dict:
        return {"time": t + dt, "component": component, "event": event, **fields}
    return [
        r(0.0, "bridge:main", "exit", pid=100, cause="SIGKILL", signal="SIGKILL"),
        r(0.001, "bridge:main", "restart", pid=100, new_pid=101, cause="SIGKILL", delay_ms=0, restart_ms=0.4,
          standby=True),
        r(0.05, "bridge:main", "disconnect", cause="bridge crash", message="window 1 (bridge crash) opened"),
        r(0.08, "bridge:main", "healthy", pid=101, cause="SIGKILL", downtime_ms=80.0),
        r(1.2, "bridge:main", "reconnect", cause="bridge crash", downtime_ms=1500.0),
        r(1.3, "bridge:main", "backfill", cause="bridge crash", status="done", recovered=2, window_id=7,
          message=f"window 1 (bridge crash): done, recovered 2 from {GROUP}"),
        r(1.4, "monitor:lawley", "backfill", cause="bridge crash", window_id=7, account="main", recovered=2,
          drops=["DR1234567"]),
        r(1.41, "monitor:mohadin", "backfill", cause="bridge crash", window_id=7, account="main", recovered=0,
          drops=[]),
    ]


def test_a_crash_with_its_recovery_and_backfills_is_one_incident() -> None:
    records = crash_and_backfill() + [
        {"time": T0 + 600, "component": "bridge:main", "event": "disconnect", "cause": "server disconnect",
         "message": f"lost {GROUP}"},
        {"time": T0 + 603, "component": "bridge:main", "event": "reconnect", "cause": "server disconnect",
         "downtime_ms": 3000.0},
        {"time": T0 + 604, "component": "monitor:lawley", "event": "backfill", "window_id": 8, "account": "main",
         "recovered": 0, "drops": []},
    ]
    found = incidents(records, EVENTS)
    assert len(found) == 2
    crash, outage = found
    assert crash.summary({GROUP: "Lawley Fibre"}) == (
        "killed by SIGKILL → restarted in 0 ms by its warm standby → healthy after 80 ms → reconnected after 1.5 s"
        " → backfill done: 2 recovered from history, 0 delivered late; lawley: 1 drop backfilled (DR1234567);"
        " 1 project missed nothing")
    assert crash.records == records[:8]  # expandable to exactly its raw records
    assert outage.summary({}) == ("disconnected (server disconnect) → reconnected after 3.0 s → "
                                  "nothing missed (1 project checked)")


def test_group_names_replace_jids_and_a_shutdown_is_one_incident() -> None:
    records = [
        {"time": T0, "component": "bridge:main", "event": "alert", "status": "firing", "rule": "disconnect",
         "summary": f"no messages from {GROUP}"},
        {"time": T0 + 10, "component": "monitor:lawley", "event": "stop", "pid": 5, "cause": "shutdown"},
        {"time": T0 + 10.1, "component": "bridge:main", "event": "stop", "pid": 6, "cause": "shutdown"},
        {"time": T0 + 10.2, "component": "watchdog", "event": "stop", "pid": 1, "message": "every component stopped"},
    ]
    found = incidents(records, EVENTS)
    assert [i.component for i in found] == ["bridge:main", "watchdog"]
    assert found[1].summary({}) == "stopped (pid 1): every component stopped → stopped monitor:lawley, bridge:main"
    assert len(found[1].records) == 3
    assert found[0].summary({GROUP: "Lawley Fibre"}) == "alert firing disconnect: no messages from Lawley Fibre"
    assert found[0].summary({}) == f"alert firing disconnect: no messages from {GROUP}"


def rects(svg: str, kind: str) -> list[dict[str, str]]:
    """The shapes of one kind, each with its attributes and the row of the <g> it is drawn in."""
    found = []
    for row, inner in re.findall(r'<g class="marks" data-row="([^"]*)">(.*?)</g>', svg):
        for attributes in re.findall(rf'<(?:rect|path) ([^>]*data-kind="{kind}"[^>]*)>', inner):
            found.append({**dict(re.findall(r'([\w-]+)="([^"]*)"', attributes)), "data-row": row})
    return found


def test_the_timeline_draws_the_outage_to_scale_with_its_cause() -> None:
    now = T0 + 1800
    records = crash_and_backfill() + [
        {"time": T0 + 900, "component": "monitor:lawley", "event": "hang", "pid": 5, "cause": "missed heartbeat"},
        {"time": T0 + 901, "component": "monitor:lawley", "event": "restart", "pid": 5, "new_pid": 6},
        {"time": T0 + 1260, "component": "monitor:lawley", "event": "healthy", "pid": 6, "downtime_ms": 360000.0},
    ]
    spans, marks = timeline.spans_and_marks(records, now, EVENTS)
    marks.append(timeline.Mark("monitor:lawley", T0 + 1.0, "backfilled", "DR1234567 backfilled (Lawley Fibre)"))
    svg = timeline.svg(["bridge:main", "monitor:lawley"], spans, marks, now - 3600, now, events=EVENTS)
    plot = timeline.WIDTH - timeline.LABEL - timeline.PAD

    (hang,) = rects(svg, "hang")
    assert hang["data-row"] == "monitor:lawley"
    assert float(hang["width"]) == round(360 / 3600 * plot, 1)  # six minutes of an hour, to scale
    assert float(hang["x"]) == round(timeline.LABEL + (T0 + 900 - (now - 3600)) / 3600 * plot, 1)
    (crash,) = rects(svg, "crash")
    assert crash["data-row"] == "bridge:main" and float(crash["width"]) == timeline.MIN_PX  # 80 ms: still visible
    (window,) = rects(svg, "disconnect")
    assert window["data-row"] == "bridge:main"
    assert rects(svg, "restart") == []  # a restart of an outage is in the outage's shape and title
    assert rects(svg, "backfilled") and "restarted in 0 ms by its warm standby" in svg
    (drop,) = rects(svg, "backfilled")
    assert drop["data-row"] == "monitor:lawley"
    assert "killed by SIGKILL · restarted in 0 ms by its warm standby · healthy after 80 ms" in svg
    assert "DR1234567 backfilled (Lawley Fibre)" in svg


def test_an_ongoing_outage_and_a_stopped_watchdog_reach_now() -> None:
    now = T0 + 100
    records = [
        {"time": T0, "component": "watchdog", "event": "stop", "pid": 1},
        {"time": T0 + 10, "component": "watchdog", "event": "start", "pid": 2},
        {"time": T0 + 50, "component": "bridge:main", "event": "disconnect", "cause": "server disconnect"},
        {"time": T0 + 60, "component": "monitor:x", "event": "failed", "cause": "exit code 2"},
    ]
    spans, _ = timeline.spans_and_marks(records, now, EVENTS)
    by_kind = {s.kind: s for s in spans}
    assert (by_kind["unsupervised"].start, by_kind["unsupervised"].end) == (T0, T0 + 10)
    assert (by_kind["disconnect"].start, by_kind["disconnect"].end) == (T0 + 50, now)
    assert (by_kind["failed"].row, by_kind["failed"].end) == ("monitor:x", now)
    svg = timeline.svg(["bridge:main"], spans, [], now - 3600, now, events=EVENTS)
    assert 'data-row="monitor:x"' in svg  # a component only the log knows still gets its row


def test_the_record_cache_reads_only_what_was_appended_and_survives_rotation(tmp_path: Path) -> None:
    log = RecoveryLog(tmp_path / "recoveries.jsonl", max_bytes=600)
    cache = RecordCache(log)
    assert cache.records() == []
    log.append("bridge:main", "exit", pid=1, cause="SIGKILL")
    assert [r["pid"] for r in cache.records()] == [1]
    version = cache.version
    assert cache.records() and cache.version == version  # nothing new: nothing re-read
    with open(log.path, "a") as f:
        f.write('{"time": %f, "component": "x", "event": "exit", "pid": 2}\n' % clock.now_s())
    assert [r["pid"] for r in cache.records()] == [1, 2]
    for pid in range(3, 12):  # past max_bytes: rotated into .1
        log.append("bridge:main", "exit", pid=pid, cause="SIGKILL")
    assert os.path.exists(str(log.path) + ".1")
    assert [r["pid"] for r in cache.records()] == list(range(1, 12))


def crash_loop(t: float = T0) -> list[dict]:
    out = []
    for i in range(3):
        out.append({"time": t + i, "component": "monitor:x", "event": "exit", "pid": 10 + i, "cause": "exit code 1",
                    "exit_code": 1})
        out.append({"time": t + i + 0.3, "component": "monitor:x", "event": "restart", "pid": 10 + i,
                    "new_pid": 11 + i, "cause": "exit code 1", "delay_ms": 200.0, "restart_ms": 300.0})
    out.append({"time": t + 3, "component": "monitor:x", "event": "crash_loop", "cause": "3 exits in 60 s",
                "backoff_s": 30})
    out.append({"time": t + 40, "component": "monitor:x", "event": "healthy", "pid": 13, "downtime_ms": 40000.0})
    return out


def test_a_crash_loop_is_one_incident_and_one_outage_until_healthy() -> None:
    (incident,) = incidents(crash_loop(), EVENTS)
    assert incident.summary({}) == ("exited with code 1 (3×) → crash loop (3 exits in 60 s) · backing off, next in 30 s → "
                                    "restarted in 0.30 s (backoff 0.20 s) → healthy after 40 s")
    spans, marks = timeline.spans_and_marks(crash_loop(), T0 + 100, EVENTS)
    (outage,) = [s for s in spans if s.kind == "crash"]
    assert (outage.start, outage.end) == (T0, T0 + 40)  # down all along, not three outages up to now
    assert [m for m in marks if m.kind == "restart"] == []
    operator = [{"time": T0, "component": "monitor:x", "event": "restart", "pid": 1, "new_pid": 2,
                 "cause": "operator restart"}]
    (mark,) = timeline.spans_and_marks(operator, T0 + 1, EVENTS)[1]  # a restart without a detection: a mark of its own
    assert (mark.row, mark.kind) == ("monitor:x", "restart") and "operator restart" in mark.label


def test_an_alert_long_into_an_outage_still_joins_its_incident() -> None:
    records = [
        {"time": T0, "component": "bridge:main", "event": "disconnect", "cause": "stream error"},
        {"time": T0 + 130, "component": "bridge:main", "event": "alert", "rule": "disconnect", "status": "firing",
         "summary": "bridge:main disconnected for 130 s"},
        {"time": T0 + 1260, "component": "bridge:main", "event": "reconnect", "cause": "stream error",
         "downtime_ms": 1260000.0},
        {"time": T0 + 1262, "component": "bridge:main", "event": "backfill", "status": "done", "recovered": 7,
         "window_id": 3},
    ]
    (incident,) = incidents(records, EVENTS)
    assert incident.summary({}) == ("disconnected (stream error) → alert firing disconnect: bridge:main disconnected "
                                    "for 130 s → reconnected after 21 min 0 s → backfill done: 7 recovered from "
                                    "history, 0 delivered late")


def test_a_watchdog_restart_is_one_incident_with_the_bridges_window_and_backfill() -> None:
    records = [
        {"time": T0, "component": "bridge:main", "event": "stop", "pid": 6, "cause": "shutdown"},
        {"time": T0 + 0.2, "component": "watchdog", "event": "stop", "pid": 1, "message": "every component stopped"},
        {"time": T0 + 5, "component": "watchdog", "event": "start", "pid": 2, "message": "supervising bridge:main"},
        {"time": T0 + 8, "component": "bridge:main", "event": "reconnect", "cause": "bridge stopped",
         "downtime_ms": 8000.0},
        {"time": T0 + 8.1, "component": "bridge:main", "event": "backfill", "status": "done", "recovered": 0,
         "window_id": 4},
    ]
    (incident,) = incidents(records, EVENTS)
    assert incident.summary({}) == ("stopped (pid 1): every component stopped → stopped bridge:main → started again "
                                    "after 5.0 s (pid 2) → bridge:main reconnected after 8.0 s → backfill done: "
                                    "0 recovered from history, 0 delivered late")


def up_line(svg: str, row: str) -> dict[str, str] | None:
    found = re.search(rf'<g class="row" data-row="{re.escape(row)}">.*?(<rect class="up" [^>]*>)?</g>', svg)
    return dict(re.findall(r'([\w-]+)="([^"]*)"', found.group(1))) if found and found.group(1) else None


def test_nothing_is_drawn_before_the_first_record() -> None:
    now = T0 + 86400
    first = now - 120  # installed two minutes ago: yesterday was not "up"
    records = [{"time": first, "component": "watchdog", "event": "start", "pid": 1}]
    spans, marks = timeline.spans_and_marks(records, now, EVENTS)
    svg = timeline.svg(["bridge:main"], spans, marks, now - 86400, now, known_from=first)
    plot = timeline.WIDTH - timeline.LABEL - timeline.PAD
    line = up_line(svg, "bridge:main")
    assert line is not None and float(line["x"]) == round(timeline.LABEL + (86400 - 120) / 86400 * plot, 1)
    assert float(line["x"]) + float(line["width"]) == pytest.approx(timeline.LABEL + plot, abs=0.11)
    assert up_line(timeline.svg(["bridge:main"], [], [], now - 86400, now, known_from=math.inf), "bridge:main") \
        is None  # no record at all: nothing known


def test_a_crash_a_moment_ago_is_visible_in_the_24_hour_view() -> None:
    now = T0 + 86400
    records = [{"time": now - 2, "component": "bridge:main", "event": "exit", "pid": 5, "cause": "SIGKILL"},
               {"time": now - 1.99, "component": "bridge:main", "event": "restart", "pid": 5, "new_pid": 6},
               {"time": now - 1.9, "component": "bridge:main", "event": "healthy", "pid": 6}]
    spans, marks = timeline.spans_and_marks(records, now, EVENTS)
    svg = timeline.svg(["bridge:main"], spans, marks, now - 86400, now)
    (crash,) = rects(svg, "crash")
    right_edge = timeline.WIDTH - timeline.PAD  # where the "now" line is drawn
    assert float(crash["width"]) >= timeline.MIN_PX >= 6
    assert float(crash["x"]) + float(crash["width"]) <= right_edge + 0.05  # not under or past the "now" line


def test_the_record_cache_knows_when_history_starts(tmp_path: Path) -> None:
    log = RecoveryLog(tmp_path / "recoveries.jsonl")
    cache = RecordCache(log)
    cache.records()
    assert cache.first_time == math.inf
    first = log.append("watchdog", "start", pid=1)["time"]
    log.append("bridge:main", "exit", pid=2, cause="SIGKILL")
    cache.records()
    assert cache.first_time == first
    fresh = RecordCache(log)
    assert fresh.records() and fresh.first_time == first  # read from scratch as well


def test_an_operator_restarts_reconnect_belongs_to_it_not_to_the_incident_before(tmp_path: Path) -> None:
    from tests.watchdog.commands.test_recovery_view_lines import operator_restart_with_a_standby
    log = RecoveryLog(tmp_path / "recoveries.jsonl")
    log.append("bridge:main", "exit", pid=9, cause="SIGKILL", at=clock.now_s() - 30)  # an earlier crash
    log.append("bridge:main", "restart", pid=9, new_pid=10, cause="SIGKILL", restart_ms=1, at=clock.now_s() - 29.9)
    log.append("bridge:main", "healthy", pid=10, downtime_ms=80, at=clock.now_s() - 29.8)
    operator_restart_with_a_standby(log)
    crash, restart = incidents(RecordCache(log).records(), EVENTS)
    assert "reconnected" not in crash.summary({})
    assert restart.summary({}).startswith("stopped (pid 10, operator restart)")
    assert "reconnected after 58 ms" in restart.summary({}) and "3 projects missed nothing" in restart.summary({})


def test_the_console_knows_no_window_nobody_declared() -> None:
    """The same records without the product's declarations: a disconnect is a plain incident, drawn as nothing."""
    records = [{"time": T0, "component": "bridge:main", "event": "disconnect", "cause": "stream error"},
               {"time": T0 + 5, "component": "bridge:main", "event": "reconnect", "downtime_ms": 5000.0}]
    spans, _ = timeline.spans_and_marks(records, T0 + 10)
    assert spans == []
    assert all("reconnected" not in incident.summary({}) for incident in incidents(records))
    assert "WhatsApp" not in timeline.legend() and "WhatsApp disconnected" in timeline.legend(EVENTS)
