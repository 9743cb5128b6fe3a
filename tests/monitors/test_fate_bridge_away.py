"""A send in doubt (issue 21, monitors/fate.py) while this host's own bridge does not answer (frozen: its port
takes the connection, nothing replies): each look asks the bridge's health for at most HEALTH_TIMEOUT_S
(monitors/failover.py), not the 10 s a send may take, so the row is judged again every few seconds and becomes
`unknown` about unknown_after_s after this host met it, not several times that."""
from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest

from bridge.schema import format_ts
from monitors.config import ClusterConfig
from monitors.drops_store import DropsDB
from monitors.failover import HEALTH_TIMEOUT_S, Senders
from monitors.fate import Fates
from monitors.feedback import FeedbackSender
from monitors.store.fence import Fence
from tests.monitors import test_fate
from tests.monitors.test_fate import HANDED_AT, acknowledged
from watchdog.components import Config
from watchdog.shared import endpoints

config, drops = test_fate.config, test_fate.drops  # its fixtures: a config with the drops store, the store


@pytest.mark.parametrize("drops_backend", ["sqlite"], indirect=True)
def test_a_send_in_doubt_is_looked_at_again_within_the_health_timeout_while_the_bridge_does_not_answer(
        config: Config, drops: DropsDB) -> None:
    project = config.project("lawley")
    feedback = acknowledged(config, drops)
    with drops.db.transaction() as tx:  # vps-a handed it to its bridge and died before marking it
        tx.run("UPDATE feedback SET handed_by = 'vps-a', handed_token = 3, handed_at = ? WHERE id = ?",
               (format_ts(HANDED_AT), feedback.id))
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel takes the connection; nobody answers
        endpoints.publish(config.data_dir, config.account("main").component,
                          {"api": f"http://127.0.0.1:{silent.getsockname()[1]}"})
        sender = FeedbackSender(config, project, drops)
        sender.fates = Fates(config, project, ClusterConfig("vps-b"), drops)
        sender.held = lambda: Fence("main", "vps-b", 4)

        async def look() -> tuple[bool, float]:
            async with aiohttp.ClientSession() as http:
                sender.senders = Senders(config, project, http)
                started = time.monotonic()
                settled = await sender._settled(feedback, [feedback])
                return settled, time.monotonic() - started

        settled, took = asyncio.run(look())
    assert not settled  # no answer, no copy: it waits (never sent on a guess)
    assert took < HEALTH_TIMEOUT_S + 3.0, f"one look at the send in doubt took {took:.1f} s"  # a send's: 10 s
