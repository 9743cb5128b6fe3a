"""End to end under `wa-watchdog run`: simulator, bridge, three monitors, the watchdog; drops in, acks out."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.benchmarks.system_run import CONTRACTORS, RunningSystem, config_text, group_jid
from tests.conftest import wait_until

C1, C2, C3, C4 = CONTRACTORS[:4]
G1, G2, G3 = group_jid(1), group_jid(2), group_jid(3)


@pytest.fixture
def system(tmp_path: Path) -> Iterator[RunningSystem]:
    running = RunningSystem(tmp_path, config_text(3))
    running.start()
    yield running
    assert running.stop() == 0


def acks(system: RunningSystem) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(s["recipient"], s["text"], tuple(s["mentioned_jids"])) for s in system.sent()]


def ack(group: str, contractor: str, drop: str) -> tuple[str, str, tuple[str, ...]]:
    return group, f"@{contractor.split('@')[0]} {drop} received, thank you", (contractor,)


@pytest.mark.slow
def test_drops_from_several_contractors_and_groups_are_recorded_and_acknowledged_exactly_once(
        system: RunningSystem) -> None:
    posts = [
        (G1, C1, "DR1734150 installed"),
        (G1, C2, "dr471349 and DR1000003 done"),  # two drops in one message, lower case
        (G2, C3, "DR1734150"),  # the same number in another project is that project's drop
        (G2, C4, "morning all"),
        (G1, C3, "DR1734150 again (photos)"),  # resubmission: an event, no second drop, no second ack
        (G3, C4, "pole DR12345678 up"),
        (G3, C1, "XDR2000000 DR123"),  # not drop numbers
    ]
    for group, contractor, text in posts:
        system.inject(group, contractor, text)
    expected_drops = {
        ("p1", "DR1734150", G1, C1), ("p1", "DR471349", G1, C2), ("p1", "DR1000003", G1, C2),
        ("p2", "DR1734150", G2, C3), ("p3", "DR12345678", G3, C4),
    }
    expected_acks = [ack(g, c, d) for _, d, g, c in expected_drops]
    wait_until(lambda: len(acks(system)) >= len(expected_acks), timeout=20, message="every acknowledgement")
    # A barrier: each project acknowledges in order, so once these are out, any duplicate would be too.
    for n, group in enumerate((G1, G2, G3)):
        system.inject(group, C1, f"DR900000{n}")
        expected_drops.add((f"p{n + 1}", f"DR900000{n}", group, C1))
        expected_acks.append(ack(group, C1, f"DR900000{n}"))
    wait_until(lambda: len(acks(system)) >= len(expected_acks), timeout=20, message="the barrier acknowledgements")

    recorded = system.query("drops", "SELECT project, drop_number, group_jid, submitted_by FROM drops")
    assert sorted(recorded) == sorted(expected_drops)
    assert sorted(acks(system)) == sorted(expected_acks)
    # the simulator has an ack before the monitor records the bridge's answer to its POST
    wait_until(lambda: system.query("drops", "SELECT DISTINCT feedback_status FROM drops") == [("sent",)],
               message="every drop's feedback recorded as sent")
    assert system.query("drops", "SELECT d.project, e.submitted_by FROM drop_events e JOIN drops d ON d.id = e.drop_id "
                                 "WHERE e.kind = 'resubmitted'") == [("p1", C3)]
    status = lambda: next(c for c in system.status() if c["name"] == "monitor:p1")  # noqa: E731
    wait_until(lambda: status()["status_text"].startswith("p1: 4 drops, cursor "), timeout=10,
               message="monitor:p1's STATUS= (published at most every 0.5 s) to count its 4 drops")
    assert status()["healthy"]


@pytest.mark.slow
def test_one_drop_written_with_other_digits_is_recorded_and_acknowledged_once(system: RunningSystem) -> None:
    """The issue's DR7123456, DR７１２３４５６ and DR٧١٢٣٤٥٦ in one group: one row, one ack, in ASCII."""
    for contractor, text in ((C1, "DR7123456 installed"), (C2, "DR\uff17\uff11\uff12\uff13\uff14\uff15\uff16 done"),
                             (C3, "\u0661 pole: DR\u0667\u0661\u0662\u0663\u0664\u0665\u0666")):
        system.inject(G1, contractor, text)
    system.inject(G1, C1, "DR9000000")  # a barrier: p1 acknowledges in order, so a second ack would be out by now
    wait_until(lambda: ack(G1, C1, "DR9000000") in acks(system), timeout=20, message="the barrier acknowledgement")
    assert system.query("drops", "SELECT drop_number, submitted_by FROM drops WHERE project = 'p1' ORDER BY id") == [
        ("DR7123456", C1), ("DR9000000", C1)]
    assert acks(system) == [ack(G1, C1, "DR7123456"), ack(G1, C1, "DR9000000")]
    assert system.query("drops", "SELECT e.submitted_by FROM drop_events e JOIN drops d ON d.id = e.drop_id "
                                 "WHERE e.kind = 'resubmitted' ORDER BY e.id") == [(C2,), (C3,)]
