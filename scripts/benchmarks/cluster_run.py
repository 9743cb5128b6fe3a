"""The smallest cluster (issue 21) for tests and benchmarks: two `wa-watchdog run` trees (hosts A and B) with their
own data dirs and node names on one simulator (A's, a process of its own) and one PostgreSQL; posting drops at a
steady rate; the faults of a host (kill -9 or SIGSTOP of its whole tree); who holds the sender lease."""
from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from monitors.store.lease import lease_states
from monitors.store.postgres import PostgresBackend
from scripts.benchmarks.system_run import (PACE_OFF, CONTRACTORS, PHONE, RunningSystem, config_text, group_jid, http,
                                           slow_start)
from tests.pg import PgCluster, find_bin_dir

RATE = 5.0  # drops posted per second
CLUSTER = '\n[cluster]\nnode = "{}"\nlease_s = {:g}\n'  # the tests' lease: 2 s (faults wait it out)


def tree(system: RunningSystem) -> list[psutil.Process]:
    assert system.proc is not None
    return [psutil.Process(system.proc.pid), *psutil.Process(system.proc.pid).children(recursive=True)]


def signal_tree(processes: list[psutil.Process], signum: int) -> None:
    for process in processes:
        try:
            process.send_signal(signum)
        except psutil.NoSuchProcess:
            pass


def kill_tree(system: RunningSystem) -> None:
    """A dead host: SIGKILL to its watchdog and every child at once (their sockets are reset by the kernel)."""
    processes = tree(system)
    signal_tree(processes, signal.SIGKILL)
    system.proc.wait(timeout=10)  # type: ignore[union-attr]
    psutil.wait_procs(processes, timeout=10)


def postgres_bin() -> Path | None:
    """PostgreSQL's server binaries for a benchmark; None having said why it is skipped."""
    bin_dir, why = find_bin_dir()
    if bin_dir is None:
        print(f"skipped: {why}")
    return bin_dir


@contextmanager
def bench_postgres(bin_dir: Path, prefix: str, settings: str = "") -> Iterator[tuple[PgCluster, Path]]:
    """A benchmark's durable throwaway PostgreSQL, started, and its work directory (the hosts' data and logs). The
    server is destroyed at the end either way; the directory is removed after a success and kept after a failure,
    saying where, for a look at what went wrong."""
    pg = PgCluster(bin_dir, durable=True, settings=settings)
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        pg.start()
        yield pg, work
    except BaseException:
        print(f"(the hosts' data and logs are kept in {work})", file=sys.stderr)
        raise
    else:
        shutil.rmtree(work, ignore_errors=True)
    finally:
        pg.destroy()


def holder(pg_url: str) -> str | None:
    reader = PostgresBackend(pg_url, "wa_watchdog")
    try:
        states = lease_states(reader)
    finally:
        reader.close()
    return states[0].holder if states and states[0].valid else None


class Poster:
    """Posts drops into the shared simulator at `rate` per second (paced from the start of each burst)."""

    def __init__(self, system: RunningSystem, rate: float = RATE) -> None:
        self.system = system
        self.rate = rate
        self.times: list[float] = []  # monotonic time of each post
        self.posted: list[str] = []
        self.halt = threading.Event()  # set: a `post` running in a thread stops early (its caller failed)

    def post(self, count: int) -> None:
        started, first = time.monotonic(), len(self.posted)
        for _ in range(count):
            if self.halt.is_set():
                return
            n = len(self.posted)
            time.sleep(max(0.0, started + (n - first) / self.rate - time.monotonic()))
            self.times.append(time.monotonic())
            self.system.inject(group_jid(1), CONTRACTORS[n % len(CONTRACTORS)], f"DR{7200000 + n} installed")
            self.posted.append(f"DR{7200000 + n}")


def two_hosts(tmp_path: Path, pg_url: str, lease_s: float = 2.0, projects: int = 1, edit: Callable[[str], str] = str,
              extra: str = "", pace_a: str = PACE_OFF) -> tuple[RunningSystem, RunningSystem]:
    """A (with the simulator, a process of its own that outlives A's tree) and B, using A's simulator; started,
    A first, so that A holds the sender lease. `edit` changes both hosts' config (more accounts, send_accounts);
    `extra` is more config for both (e.g. webhooks); `pace_a`: A's account's pace line (B's is off)."""
    a = RunningSystem(tmp_path / "a", edit(slow_start(config_text(projects, database_url=pg_url, separate_sim=True,
                                                                  pace=pace_a)))
                      + CLUSTER.format("vps-a", lease_s) + extra, database_url=pg_url, separate_sim=True)
    a.start()
    b_config = edit(slow_start(config_text(projects, database_url=pg_url))).replace(
        "[sim]\nport = 0\n", f'[sim]\nport = 0\nurl = "{a.sim_url}"\n') + CLUSTER.format("vps-b", lease_s) + extra
    b = RunningSystem(tmp_path / "b", b_config, database_url=pg_url)
    try:
        b.start()
    except BaseException:
        a.stop()
        raise
    if holder(pg_url) != "vps-a":  # A came first and kept its lease
        b.stop()
        a.stop()
        raise AssertionError(f"B holds the sender lease, not A: {holder(pg_url)}")
    return a, b


# -- a send in flight when A dies (sends of unknown fate, monitors/fate.py) ---------------------------------------

def ack_row(system: RunningSystem, drop: str) -> tuple:
    """(status, bridge_message_id, handed_by, idempotency_key) of the drop's acknowledgement."""
    rows = system.query("drops", "SELECT f.status, f.bridge_message_id, f.handed_by, f.idempotency_key FROM feedback f "
                                 "JOIN drops d ON d.id = f.drop_id WHERE d.drop_number = ?", drop)
    return rows[0] if rows else ("", None, None, "")


def sent_of(system: RunningSystem, drop: str) -> list[dict]:
    """What reached the group about `drop` (/sim/sent: once per message id)."""
    return [s for s in system.sent() if drop in s["text"]]


def withhold(system: RunningSystem, node: str, on: bool, drop: bool = False) -> None:
    """WhatsApp takes `node`'s sends but its answers are lost (`POST /sim/withhold`); `drop`: and the device's
    connection drops right after each (its bridge hears at once that the answer is lost)."""
    http("POST", f"{system.sim_url}/sim/withhold", {"session": PHONE, "node": node, "withhold": on, "drop": drop})


def server_ids(config: str) -> str:
    """A host's config whose sim transport sends as neonize does: the message ids are the simulator's
    (`[sim] server_ids`), so a resend is a second message (for `two_hosts(edit=)`)."""
    return config.replace("[sim]\nport = 0\n", "[sim]\nport = 0\nserver_ids = true\n")


def watchdog_and_bridge(system: RunningSystem) -> list[psutil.Process]:
    """The host's watchdog (so that nothing restarts the bridge) and its bridge: its monitor runs on."""
    bridge = system.pid("bridge:main")
    assert system.proc is not None and bridge is not None
    return [psutil.Process(system.proc.pid), psutil.Process(bridge)]
