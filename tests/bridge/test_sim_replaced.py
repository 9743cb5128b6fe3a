"""A device that connects while an older connection of it is still attached: the simulator asks the older one.
A live one is two connections of the device (`stream_replaced`: two answering clients, tests/bridge/
test_simulator.py and test_process.py); one that no longer answers (a frozen client, a socket a network cut left
half-open) is replaced too but counted as `dead_replaced`, not as two connections (issue 21)."""
from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from scripts.benchmarks.cluster_lab import Relay
from tests.bridge_support import (GROUP_A, consume_queue_elsewhere, health, inject, rows, sessions, start_bridge,
                                  start_sim)
from tests.conftest import Processes, wait_until


def replaced(sim_url: str) -> tuple[int, int]:
    state = sessions(sim_url)
    return state["stream_replaced"], state["dead_replaced"]


@pytest.mark.slow
def test_a_frozen_older_connection_is_replaced_without_counting_two(procs: Processes, data_dir: Path) -> None:
    _, sim = start_sim(procs, data_dir)
    bridge, _ = start_bridge(procs, data_dir)
    os.kill(bridge.pid, signal.SIGSTOP)  # its socket stays open; nobody answers on it
    try:
        message_id = inject(sim, "DR3100001 while frozen", GROUP_A)["id"]
        assert consume_queue_elsewhere(data_dir, expected=1) == [message_id]  # the new connection is served
        assert wait_until(lambda: replaced(sim) if sum(replaced(sim)) else None, timeout=30,
                          message="the older connection probed") == (0, 1)
        assert sessions(sim)["connections"] == 2
    finally:
        bridge.kill()  # stopped: only SIGKILL ends it now
        bridge.wait(timeout=10)


@pytest.mark.slow
def test_a_connection_a_network_cut_left_half_open_is_not_two(procs: Processes, data_dir: Path, config_path: Path,
                                                             write_config: Callable[..., Path]) -> None:
    """The case of `scripts/chaos --cluster`: the bridge gives the cut connection up and reconnects before the
    simulator's heartbeat noticed the old socket was dead."""
    _, sim = start_sim(procs, data_dir)
    relay = Relay("127.0.0.1", int(sim.rsplit(":", 1)[1]))
    try:
        write_config(config_path.read_text().replace("[sim]\n", f'[sim]\nurl = "{relay.url}"\n', 1))
        _, url = start_bridge(procs, data_dir)
        relay.cut_open()
        wait_until(lambda: sessions(sim)["connections"] == 2, timeout=20,
                   message="the bridge to give the cut connection up and connect again")
        assert wait_until(lambda: replaced(sim) if sum(replaced(sim)) else None, timeout=30,
                          message="the half-open connection probed") == (0, 1)
        message_id = inject(sim, "DR3100002 after the cut", GROUP_A)["id"]
        wait_until(lambda: rows(data_dir, "SELECT 1 FROM messages WHERE id = ?", message_id), timeout=15,
                   message="the message stored through the new connection")
        assert (sessions(sim)["connections"], replaced(sim), health(url)["state"]) == (2, (0, 1), "connected")
    finally:
        relay.close()
