"""Sends of unknown fate (issue 21, monitors/fate.py), below the processes: the `unknown` status on both stores
and the operator's decision; finding another device's copy of a message whose id the transport chose itself
(neonize: no id derived from the key), by chat, sender, text and time; and the verdict rules."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from bridge.outbox_answers import new_message_id
from bridge.schema import format_ts, open_readonly
from bridge.store import Store
from bridge.transport import IncomingMessage, Source
from monitors.config import ClusterConfig
from monitors.drops_store import (FEEDBACK_PENDING, FEEDBACK_QUEUED, FEEDBACK_SENT, FEEDBACK_UNKNOWN, DropsDB,
                                  Feedback, LeaseLost, Submission, open_drops_store)
from monitors.fate import FOUND, SEND, WAIT, Connection, Fates, find_copy
from monitors.store.copies import MessagesCopies
from monitors.feedback import FeedbackSender, ack_for
from monitors.store.handed import Handed, hand
from monitors.store.lease import SenderLease
from tests.conftest import BASE_CONFIG, GROUP_A, GROUP_B, MESSAGE_ACK, Processes, wait_until
from tests.monitor_support import cli
from tests.monitors.test_drops_api import api_config, get, start_api
from watchdog.components import Config, load

OWN = "27710009999@s.whatsapp.net"  # the sending number: every linked device of it
CONTRACTOR = "27710000001@s.whatsapp.net"
HANDED_AT = datetime(2026, 11, 24, 8, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def config(write_config, drops_backend: str) -> Config:  # noqa: ANN001
    return load(write_config(BASE_CONFIG + drops_backend))


@pytest.fixture
def drops(config: Config) -> Iterator[DropsDB]:
    store = open_drops_store(config)
    yield store
    store.close()


def acknowledged(config: Config, drops: DropsDB, number: str = "DR1234567") -> Feedback:
    """A recorded drop with its acknowledgement pending (as a monitor records it)."""
    project = config.project("lawley")
    sub = Submission(number, GROUP_A, "Lawley", CONTRACTOR, f"M{number}", format_ts(HANDED_AT), False)
    [drop] = drops.record("lawley", "main", 1, [sub], lambda s: ack_for(project, s))
    [feedback] = drops.feedback_of(drop)
    return feedback


def test_unknown_is_a_feedback_status_of_both_stores_and_the_operator_decides_it(config: Config,
                                                                                   drops: DropsDB) -> None:
    first, second = acknowledged(config, drops), acknowledged(config, drops, "DR7654321")
    for feedback in (first, second):
        drops.finish_feedback(feedback, FEEDBACK_UNKNOWN, "handed to vps-a's bridge; no copy seen")
    assert [f.id for f in drops.unknown_feedback()] == [first.id, second.id]
    assert drops.drop("lawley", "DR1234567").feedback_status == FEEDBACK_UNKNOWN  # the drop shows it (API, listing)
    assert [d.drop_number for d in drops.list_drops(feedback=FEEDBACK_UNKNOWN).drops] == ["DR7654321", "DR1234567"]
    with pytest.raises(Exception, match="(?i)check"):  # the widened CHECK still refuses what is no status
        with drops.db.transaction() as tx:
            tx.run("UPDATE feedback SET status = 'bogus' WHERE id = ?", (first.id,))
    before = drops.db.rows("SELECT COUNT(*) FROM events WHERE type = 'feedback.sent'")[0][0]
    sent = drops.decide_unknown(first.id, FEEDBACK_SENT)  # the operator saw it in the group
    assert (sent.status, sent.sent_at is not None) == (FEEDBACK_SENT, True)
    assert drops.db.rows("SELECT COUNT(*) FROM events WHERE type = 'feedback.sent'")[0][0] == before + 1
    with drops.db.transaction() as tx:
        tx.run("UPDATE feedback SET handed_by = 'vps-a', handed_token = 3, handed_at = ? WHERE id = ?",
               (format_ts(HANDED_AT), second.id))
    again = drops.decide_unknown(second.id, FEEDBACK_PENDING)  # the operator did not: send it
    assert again.status == FEEDBACK_PENDING
    assert drops.db.rows("SELECT handed_by FROM feedback WHERE id = ?", (second.id,)) == [(None,)]  # no doubt left
    assert drops.decide_unknown(second.id, FEEDBACK_SENT).status == FEEDBACK_PENDING  # only unknown is decided
    assert drops.unknown_feedback() == []


@pytest.fixture
def messages(tmp_path) -> Iterator[Store]:  # noqa: ANN001
    store = Store(tmp_path / "messages.db")
    yield store
    store.close()


def from_me(message_id: str, text: str, at: datetime, chat: str = GROUP_A, mine: bool = True) -> IncomingMessage:
    """A message as a sibling device receives it through neonize: WhatsApp's own id (`3EB0` + random hex)."""
    return IncomingMessage(message_id, chat, OWN if mine else CONTRACTOR, text, at, Source.LIVE, is_from_me=mine)


def feedback_row(text: str, key: str = "k1", recipient: str = GROUP_A) -> Feedback:
    return Feedback(7, "lawley", "DR1234567", "ack", recipient, text, (CONTRACTOR,), key, FEEDBACK_PENDING,
                    format_ts(HANDED_AT), None, 0, "", None, None, None, None)


def test_a_copy_whose_id_the_transport_chose_is_found_by_chat_sender_text_and_time(messages: Store) -> None:
    text = "@27710000001 DR1234567 received, thank you"
    messages.add_messages([
        from_me("3EB0AAAAAAAAAAAAAAAAAA", text, HANDED_AT - timedelta(hours=2)),  # an earlier one: too old
        from_me("3EB0BBBBBBBBBBBBBBBBBB", text, HANDED_AT, chat=GROUP_B),  # another group
        from_me("3EB0CCCCCCCCCCCCCCCCCC", text, HANDED_AT + timedelta(seconds=1), mine=False),  # not from this number
        from_me("3EB0DDDDDDDDDDDDDDDDDD", text + "!", HANDED_AT + timedelta(seconds=1)),  # other text
        from_me("3EB0EEEEEEEEEEEEEEEEEE", text, HANDED_AT - timedelta(seconds=5)),  # the sender's clock is behind
        from_me("3EB0FFFFFFFFFFFFFFFFFF", text, HANDED_AT + timedelta(seconds=2)),
    ])
    conn = open_readonly(messages.path)
    try:
        since = format_ts(HANDED_AT)
        found = find_copy(MessagesCopies(conn), OWN, feedback_row(text), since)
        assert (found.message_id, found.how) == ("3EB0EEEEEEEEEEEEEEEEEE", "text")  # type: ignore[union-attr]
        # a copy that is already another feedback's message counts for that one only
        found = find_copy(MessagesCopies(conn), OWN, feedback_row(text), since, taken={"3EB0EEEEEEEEEEEEEEEEEE"})
        assert found is not None and found.message_id == "3EB0FFFFFFFFFFFFFFFFFF"
        assert find_copy(MessagesCopies(conn), OWN, feedback_row(text), since,
                         taken={"3EB0EEEEEEEEEEEEEEEEEE", "3EB0FFFFFFFFFFFFFFFFFF"}) is None
        other = feedback_row("@27710000001 DR7654321 received, thank you")
        assert find_copy(MessagesCopies(conn), OWN, other, since) is None
        later = format_ts(HANDED_AT + timedelta(hours=1))
        assert find_copy(MessagesCopies(conn), OWN, feedback_row(text, recipient=GROUP_B), later) \
            is None  # GROUP_B's is older than an hour before that hand-over
    finally:
        conn.close()


def test_a_copy_with_the_id_derived_from_the_key_is_found_by_its_id(messages: Store) -> None:
    derived = new_message_id(OWN, "k2")  # what the bridge chooses where the transport lets it (the simulator)
    messages.add_messages([from_me(derived, "edited on the way", HANDED_AT - timedelta(hours=3))])
    conn = open_readonly(messages.path)
    try:
        found = find_copy(MessagesCopies(conn), OWN, feedback_row("@27710000001 DR1234567 received", key="k2"),
                          format_ts(HANDED_AT))
        assert found is not None and (found.message_id, found.how) == (derived, "id")
    finally:
        conn.close()


@pytest.mark.parametrize("drops_backend", ["sqlite"], indirect=True)
def test_the_verdict_waits_for_a_connection_long_enough_then_sends_or_gives_up_as_unknown(config: Config,
                                                                                           drops: DropsDB) -> None:
    cluster = ClusterConfig("vps-b", copy_grace_s=10.0, unknown_after_s=60.0)
    fates = Fates(config, config.project("lawley"), cluster, drops)
    message = feedback_row("@27710000001 DR1234567 received", key="k3")
    doubt = Handed("vps-a", 3, format_ts(HANDED_AT))
    assert fates.judge(message, doubt, Connection(3600.0, True)) == (WAIT, None)  # met just now: the copy may be late
    fates._met[message.idempotency_key] -= 11  # met 11 s ago
    assert fates.judge(message, doubt, Connection(3600.0, True)) == (SEND, None)  # connected throughout: never sent
    assert fates.judge(message, doubt, Connection(5.0, True)) == (WAIT, None)  # reconnected 5 s ago: wait for it
    assert fates.judge(message, doubt, Connection(3600.0, False)) == (WAIT, None)  # its offline queue not replayed
    assert fates.judge(message, doubt, Connection.of(None)) == (WAIT, None)  # the bridge does not answer
    fates._met[message.idempotency_key] -= 50  # met 61 s ago, never connected long enough since
    assert fates.judge(message, doubt, Connection(5.0, True)) == ("unknown", None)
    reaction = replace(message, text="✅", idempotency_key="k4")
    fates.project = replace(fates.project, feedback=replace(fates.project.feedback, ack="reaction"))
    assert fates.judge(reaction, doubt, Connection.of(None)) == (SEND, None)  # the same reaction again is the same
    store = Store(config.account("main").store)  # this host's bridge received the other device's copy
    try:
        store.add_messages([from_me(new_message_id(config.account("main").jid, "k3"), message.text, HANDED_AT)])
    finally:
        store.close()
    fates.project = config.project("lawley")
    verdict, copy = fates.judge(message, doubt, Connection.of(None))
    assert verdict == FOUND and copy is not None and copy.how == "id"


@pytest.mark.slow
@pytest.mark.parametrize("drops_backend", ["sqlite"], indirect=True)
def test_the_operator_resends_or_marks_sent_feedback_of_unknown_fate_and_nothing_else(config: Config, drops: DropsDB) -> None:
    feedback = acknowledged(config, drops)
    neither = cli(config.path, "feedback", "--project", "lawley", "DR1234567")
    assert neither.returncode == 2 and "one of the arguments --message --mark-sent --resend" in neither.stderr
    pending = cli(config.path, "feedback", "--project", "lawley", "DR1234567", "--resend")
    assert pending.returncode == 1 and "has no feedback of unknown fate (its feedback is pending)" in pending.stderr
    drops.finish_feedback(feedback, FEEDBACK_UNKNOWN, "handed to vps-a's bridge; no copy seen")
    resent = cli(config.path, "feedback", "--project", "lawley", "DR1234567", "--resend")
    assert resent.returncode == 0 and resent.stdout.startswith("pending: "), resent.stdout + resent.stderr
    assert drops.feedback(feedback.id).status == FEEDBACK_PENDING  # the monitor (the lease holder) sends it
    assert drops.drop("lawley", "DR1234567").feedback_status == FEEDBACK_PENDING
    drops.finish_feedback(feedback, FEEDBACK_UNKNOWN, "handed to vps-a's bridge; no copy seen")
    marked = cli(config.path, "feedback", "--project", "lawley", "DR1234567", "--mark-sent")
    assert marked.returncode == 0 and marked.stdout.startswith("marked sent: "), marked.stdout + marked.stderr
    assert drops.drop("lawley", "DR1234567").feedback_status == FEEDBACK_SENT


@pytest.mark.slow
def test_the_drops_api_shows_feedback_of_unknown_fate_and_filters_by_it(write_config) -> None:  # noqa: ANN001
    config_path = write_config(api_config())
    config = load(config_path)
    drops = open_drops_store(config)
    try:
        feedback = acknowledged(config, drops)
        acknowledged(config, drops, "DR7654321")  # pending: not listed under unknown
        drops.finish_feedback(feedback, FEEDBACK_UNKNOWN, "handed to vps-a's bridge; no copy seen")
    finally:
        drops.close()
    procs = Processes(config_path)
    try:
        api = start_api(procs, config.data_dir)
        status, page = get(f"{api}/api/drops?feedback=unknown")
        assert status == 200 and [(d["drop_number"], d["feedback_status"]) for d in page["drops"]] == [
            ("DR1234567", "unknown")], page
        status, detail = get(f"{api}/api/drops/{page['drops'][0]['id']}")
        assert status == 200 and [(f["status"], f["error"]) for f in detail["feedback"]] == [
            ("unknown", "handed to vps-a's bridge; no copy seen")], detail
    finally:
        procs.stop_all()


@pytest.mark.parametrize("drops_backend", ["postgres"], indirect=True)
def test_what_another_nodes_bridge_queued_is_taken_over_once_its_token_is_over_and_its_give_back_is_a_no_op(
        config: Config, drops: DropsDB) -> None:
    """Host A's bridge accepted acknowledgements into its outbox (202, `queued`) and A is gone: B, holding the lease
    now, takes them over to find out (pending, claimed by B, still handed by A: monitors/fate.py's doubt), but not
    before A's token's validity is surely over (a lease after B's grant), and A's give-back, should A come back,
    changes nothing B took. Rows no node handed on stay queued (the bridge's outbox's job)."""
    short = 1.5
    a = SenderLease(config.database.url, "wa_watchdog", "main", "vps-a", short)
    b = SenderLease(config.database.url, "wa_watchdog", "main", "vps-b", 10.0)  # held through the test
    try:
        rows = [acknowledged(config, drops, f"DR123456{n}") for n in range(4)]
        a.acquire()
        stale = a.fence()
        assert stale is not None and len(drops.claim_feedback("lawley", stale)) == 4
        hand(drops.db, [r.id for r in rows[:3]], stale)
        for n, row in enumerate(rows):  # the last one: queued, but never handed on (one host, before the cluster)
            drops.finish_feedback(row, FEEDBACK_QUEUED, "", f"3EB0{n}", fence=stale)
        wait_until(b.acquire, timeout=10, message="vps-b to take the expired lease over")
        fence = b.fence()
        assert fence is not None and fence.token == stale.token + 1
        with pytest.raises(LeaseLost):
            drops.take_queued("lawley", stale, short)  # A, waking up: takes nothing
        wait = drops.take_queued("lawley", fence, short)
        assert wait is not None and 0 < wait <= short  # A's bridge may still send under its token: not yet
        assert [drops.feedback(r.id).status for r in rows] == [FEEDBACK_QUEUED] * 4
        assert drops.give_back(["3EB02"], stale.token) == [rows[2].id]  # A came back first for this one: its own
        wait_until(lambda: drops.take_queued("lawley", fence, short) is None, timeout=10,
                   message="the grant to be a lease old")
        taken = drops.db.rows("SELECT status, claim_token, claimed_by, handed_by, handed_token, bridge_message_id "
                              "FROM feedback ORDER BY id")
        assert taken == [(FEEDBACK_PENDING, fence.token, "vps-b", "vps-a", stale.token, None)] * 2 + [
            (FEEDBACK_PENDING, stale.token, "vps-a", None, None, None),  # given back (never sent): no doubt left
            (FEEDBACK_QUEUED, stale.token, "vps-a", None, None, "3EB03")]
        assert drops.drop("lawley", "DR1234560").feedback_status == FEEDBACK_PENDING
        fates = Fates(config, config.project("lawley"), ClusterConfig("vps-b", lease_s=short), drops)
        assert set(fates.doubted([drops.feedback(r.id) for r in rows])) == {r.id for r in rows[:2]}  # found out
        # B decides: the first was in the group (found: sent), the second goes again through B's bridge (queued)
        drops.finish_feedback(drops.feedback(rows[0].id), FEEDBACK_SENT, "", "3EB00", fence=fence)
        drops.finish_feedback(drops.feedback(rows[1].id), FEEDBACK_QUEUED, "", "3EB01", fence=fence)
        assert drops.give_back(["3EB00", "3EB01"], stale.token) == []  # A's bridge withdrew them: too late, no-op
        assert [drops.feedback(r.id).status for r in rows[:2]] == [FEEDBACK_SENT, FEEDBACK_QUEUED]
        assert drops.take_queued("lawley", fence, short) is None  # queued under B's token: B's bridge's, not taken
        assert drops.feedback(rows[1].id).status == FEEDBACK_QUEUED
        # queued by A, taken over, queued by B: one outcome, one feedback.sent (A's report); sent is another outcome
        reported = drops.db.rows("SELECT payload FROM events WHERE type = 'feedback.sent' ORDER BY seq")
        assert sorted((f["id"], f["status"]) for f in (json.loads(p)["data"]["feedback"] for (p,) in reported)) == [
            (rows[0].id, FEEDBACK_QUEUED), (rows[0].id, FEEDBACK_SENT), (rows[1].id, FEEDBACK_QUEUED),
            (rows[2].id, FEEDBACK_QUEUED), (rows[3].id, FEEDBACK_QUEUED)]
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("handed_by", ["vps-a", "vps-b"])
def test_an_acknowledgement_in_doubt_is_not_coalesced_but_posted_as_it_was(write_config,  # noqa: ANN001
                                                                           handed_by: str) -> None:
    """Another node handed it on alone (or its bridge queued it alone), or this node did (vps-b: its bridge holds
    the key, in doubt if it lost the answer): grouped with other acknowledgements into one new message, its text
    and key would change, its copy would not be recognised, and it would go a second time."""
    config = load(write_config(BASE_CONFIG.replace(MESSAGE_ACK, 'feedback = { ack = "message", coalesce_s = 2.0 }', 1)))
    drops = open_drops_store(config)
    try:
        doubt, *fresh = [acknowledged(config, drops, f"DR765432{n}") for n in range(3)]
        with drops.db.transaction() as tx:
            tx.run("UPDATE feedback SET handed_by = ?, handed_token = 3, handed_at = ? WHERE id = ?",
                   (handed_by, format_ts(HANDED_AT), doubt.id))
        sender = FeedbackSender(config, config.project("lawley"), drops)
        sender.fates = Fates(config, config.project("lawley"), ClusterConfig("vps-b"), drops)
        sender._seen = {row.id: time.monotonic() - 60 for row in (doubt, *fresh)}  # all due
        units, hold = sender._units(drops.pending_feedback("lawley"))
        assert hold is None and [[row.id for row in unit] for unit in units] == [[doubt.id], [r.id for r in fresh]]
        assert drops.feedback(doubt.id).carrier_id is None
    finally:
        drops.close()
