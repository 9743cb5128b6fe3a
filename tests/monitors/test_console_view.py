"""The console's Drops panel, from the drops side: real drops.db and messages.db files, read-only."""
from __future__ import annotations

from pathlib import Path

from bridge.schema import format_ts

from bridge.store import Store
from bridge.transport import IncomingMessage, Source
from monitors.console_view import DropsView
from monitors.drops_store import Submission, open_drops_store
from tests.conftest import GROUP_A
from watchdog import components
from watchdog.components import load
from watchdog.control.console.extensions import load as load_extensions
from watchdog.shared import clock

SENDER = "27710000001@s.whatsapp.net"


def test_todays_drops_per_project_with_backfilled_flagged_and_their_messages(config_path: Path) -> None:
    config = load(config_path)
    view = DropsView(config)
    assert "none yet today" in view.panel([]) and view.marks(0, clock.now_s()) == []  # no drops.db yet: no error

    now = clock.now()
    store = Store(config.accounts["main"].store)
    store.add_messages([IncomingMessage(id="M1", chat_jid=GROUP_A, sender_jid=SENDER, text="DR1234567 pole 4 done",
                                        timestamp=now, source=Source.OFFLINE, chat_name="Lawley Fibre")])
    store.close()
    drops = open_drops_store(config)
    drops.record("lawley", "main", 1, [
        Submission("DR1234567", GROUP_A, "Lawley Fibre", SENDER, "M1", format_ts(now), backfilled=True),
        Submission("DR7654321", GROUP_A, "Lawley Fibre", SENDER, "M2", format_ts(now), backfilled=False)], ack=None)
    drops.close()

    panel = view.panel([])
    assert 'data-project="lawley"' in panel and "2 drops today, 1 backfilled" in panel
    assert '<tr class="drop backfilled" data-drop="DR1234567">' in panel
    assert '<tr class="drop" data-drop="DR7654321">' in panel
    assert 'href="/console/x/drops/lawley/DR1234567"' in panel
    assert 'data-project="mohadin"' in panel and "none yet today" in panel  # every configured project

    (mark,) = view.marks(clock.now_s() - 3600, clock.now_s() + 1)
    assert (mark.row, mark.kind) == ("monitor:lawley", "backfilled") and "DR1234567" in mark.label
    assert view.names()[GROUP_A] == "Lawley Fibre"

    title, html = view.detail("lawley/DR1234567")
    assert title == "DR1234567 (lawley)"
    assert "DR1234567 pole 4 done" in html and "backfilled" in html
    assert view.detail("lawley/DR0000000") is None and view.detail("nope") is None


def test_the_console_finds_the_views_the_slices_name(config_path: Path) -> None:
    loaded = load_extensions(load(config_path), components.console_views())
    assert loaded.problems == []
    assert [type(e).__name__ for e in loaded.extensions] == ["ConnectionView", "SendingView", "DropsView"]
    assert set(loaded.events.kinds) == {"disconnect", "backfilled"}


def test_a_busy_project_shows_its_newest_drops_and_links_the_rest(config_path: Path) -> None:
    config = load(config_path)
    now = clock.now()
    drops = open_drops_store(config)
    drops.record("lawley", "main", 1, [
        Submission(f"DR{1000000 + i}", GROUP_A, "Lawley Fibre", SENDER, f"M{i}", format_ts(now), backfilled=i == 0)
        for i in range(13)], ack=None)
    drops.close()
    view = DropsView(config)
    panel = view.panel([])
    assert panel.count('<tr class="drop') == 10 and "13 drops today, 1 backfilled" in panel
    assert '<a href="/console/x/drops/lawley">3 more today, 1 of them backfilled</a>' in panel
    title, html = view.detail("lawley")
    assert title == "lawley: drops today" and html.count('<tr class="drop') == 13
    assert view.detail("nope") is None
