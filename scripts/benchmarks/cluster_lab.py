"""Hosts of a cluster as network namespaces (../shared/CLUSTER-LAB.md): each host a namespace with a veth pair to
the root namespace, link-local addresses, names with a prefix unique to the test; the servers both hosts use
(PostgreSQL, the simulator through a relay) on the first pair's root-side address, reached from every namespace
by its default route. A host is cut off from one server by dropping its packets (silently: no RST, no FIN) in its
own namespace. Everything made is deleted at the end, also when the run fails; where the machine does not permit
it `LabUnavailable` says why (a test skips with it, `scripts/chaos --cluster` leaves the partitions out).
Shared by tests/test_cluster_partitions.py, `scripts/bench cluster` and `scripts/chaos --cluster`.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from scripts.benchmarks.chaos_checks import DROP_EVENTS
from scripts.benchmarks.cluster_run import CLUSTER, holder
from scripts.benchmarks.system_run import RunningSystem, config_text, slow_start
from scripts.benchmarks.webhook_receiver import WebhookReceiver
from tests.pg import PgCluster

SBIN = "/usr/sbin:/sbin"
CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)


class LabUnavailable(RuntimeError):
    """The machine does not permit the namespaces (not root, no ip or iptables, `ip netns` refused)."""


def which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":" + SBIN)


@dataclass(frozen=True)
class NetHost:
    """One namespace: `inside` its own address, `outside` the root side's (the servers' when it is the first)."""

    name: str
    outside: str
    inside: str

    def exec(self, *argv: str) -> list[str]:
        return [which("ip") or "ip", "netns", "exec", self.name, *argv]

    def cut(self, address: str, port: int, cut: bool = True) -> None:
        """Drop every TCP packet between this host and `address:port`, or (cut=False) stop dropping them."""
        action = "-A" if cut else "-D"
        for chain, direction, peer in (("OUTPUT", "--dport", "-d"), ("INPUT", "--sport", "-s")):
            _run(*self.exec(which("iptables") or "iptables", action, chain, peer, address, "-p", "tcp",
                            direction, str(port), "-j", "DROP"))

    @contextmanager
    def entered(self) -> Iterator[None]:
        """This thread in the host's namespace for the block (to reach what the host serves on its 127.0.0.1)."""
        original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError("setns into the host's namespace failed")
            yield
        finally:
            libc.setns(original, CLONE_NEWNET)
            os.close(original)
            os.close(target)


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True)


@contextmanager
def hosts(prefix: str, count: int) -> Iterator[list[NetHost]]:
    """`count` namespaces `<prefix>-0..`, host i on 169.254.<base+i>.2 with the root side on .1; deleted at the end."""
    if os.geteuid() != 0 or not which("ip") or not which("iptables"):
        raise LabUnavailable("network namespaces with iptables need root, ip (iproute2) and iptables")
    base = 100 + int.from_bytes(prefix.encode(), "little") % 150  # runs at once rarely share a subnet
    made: list[NetHost] = []
    try:
        for i in range(count):
            host = NetHost(f"{prefix}-{i}", f"169.254.{base + i}.1", f"169.254.{base + i}.2")
            outer, inner = f"{prefix}{i}o", f"{prefix}{i}i"
            try:
                _run("ip", "netns", "add", host.name)
            except subprocess.CalledProcessError as exc:
                raise LabUnavailable(f"ip netns not permitted here: {exc.stderr.strip()}") from None
            made.append(host)
            _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            _run("ip", "link", "set", inner, "netns", host.name)
            _run("ip", "addr", "add", f"{host.outside}/30", "dev", outer)
            _run("ip", "link", "set", outer, "up")
            _run(*host.exec("ip", "addr", "add", f"{host.inside}/30", "dev", inner))
            _run(*host.exec("ip", "link", "set", inner, "up"))
            _run(*host.exec("ip", "link", "set", "lo", "up"))
            _run(*host.exec("ip", "route", "add", "default", "via", host.outside))
        yield made
    finally:
        for i, host in enumerate(made):
            subprocess.run(["ip", "netns", "del", host.name], capture_output=True, timeout=10)
            subprocess.run(["ip", "link", "del", f"{prefix}{i}o"], capture_output=True, timeout=10)


class Relay:
    """TCP from `address:port` (a free port) to `target` on this namespace's 127.0.0.1: the simulator listens on
    loopback only, the hosts in their namespaces reach it here. Threads, ended by `close`."""

    def __init__(self, address: str, target: int) -> None:
        self.target = target
        self.server = socket.create_server((address, 0))
        self.port: int = self.server.getsockname()[1]
        self.address = address
        self._open: list[socket.socket] = []
        self._cuts: list[threading.Event] = []  # one per connection: set, it forwards nothing more
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._open += [client, upstream]
            self._cuts.append(cut := threading.Event())
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink, cut), daemon=True).start()

    def cut_open(self) -> None:
        """What a network cut does to the connections open now: nothing gets through any more, not even their
        end, so each side keeps a half-open socket. Connections made afterwards get through (the cut healed)."""
        for cut in self._cuts:
            cut.set()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, cut: threading.Event) -> None:
        try:
            while data := source.recv(65536):
                if not cut.is_set():
                    sink.sendall(data)
        except OSError:
            pass
        if cut.is_set():
            return
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.server.close()
        for s in self._open:
            s.close()


class NamespacedSystem(RunningSystem):
    """A `wa-watchdog run` tree in a host's namespace: started by `ip netns exec`, its control API (on the host's
    own 127.0.0.1) asked from inside; the simulator is a shared one, reached by the test at `sim_api`."""

    def __init__(self, host: NetHost, sim_api: str, workdir: Path, config: str, database_url: str) -> None:
        super().__init__(workdir, config, database_url=database_url)
        self.host = host
        self.sim_api = sim_api
        self.command = tuple(host.exec(*self.command))

    @property
    def sim_url(self) -> str:
        return self.sim_api

    def status(self) -> list[dict]:
        with self.host.entered():
            return super().status()


@dataclass
class Lab:
    a: NamespacedSystem
    b: NamespacedSystem
    pg: PgCluster
    pg_url: str  # the test's own (127.0.0.1)
    relay: Relay  # the simulator's (WhatsApp), as the hosts reach it
    server: str  # the address of the servers both hosts use (PostgreSQL, the relays)

    def cut(self, system: NamespacedSystem, port: int, cut: bool = True) -> None:
        """Drop every packet between the host and the server at `port` (PostgreSQL's, a relay's), or heal."""
        system.host.cut(self.server, port, cut)


@contextmanager
def cluster_lab(workdir: Path, bin_dir: Path, lease_s: float, durable: bool = False,
                settings: str = "", webhooks: WebhookReceiver | None = None,
                edit: Callable[[str], str] = str) -> Iterator[Lab]:
    """Two namespaces, a PostgreSQL (`durable`, more `settings`) on their servers' address, a simulator behind a
    relay there, and hosts A (started first: it holds the sender lease) and B; all ended and deleted at the end.
    `webhooks`: a receiver (on this namespace's 127.0.0.1) both hosts deliver the drop events to, through a relay.
    `edit` changes both hosts' config (e.g. cluster_run.server_ids)."""
    with hosts(f"wa{os.getpid() % 100000}", 2) as (ha, hb):  # unique to this run: runs at once do not meet
        server = ha.outside
        pg = PgCluster(bin_dir, durable, f"-c listen_addresses=127.0.0.1,{server} {settings}")
        sim: RunningSystem | None = None
        relays: list[Relay] = []
        started: list[NamespacedSystem] = []
        try:
            with open(pg.data / "pg_hba.conf", "a") as hba:  # a throwaway cluster: trust the veth subnets
                hba.write("host all all 169.254.0.0/16 trust\n")
            pg.start()
            pg_url = pg.create_database("cluster_lab")
            host_url = pg_url.replace("127.0.0.1", server)
            sim = RunningSystem(workdir / "sim", config_text(1, separate_sim=True), separate_sim=True)
            sim.start_sim()
            relays.append(relay := Relay(server, int(sim.sim_url.rsplit(":", 1)[1])))
            hooks = ""
            if webhooks is not None:
                relays.append(hook_relay := Relay(server, webhooks.port))
                hooks = webhooks.config("cluster", DROP_EVENTS, f"{hook_relay.url}/hook")

            def host(net: NetHost, node: str) -> NamespacedSystem:
                config = edit(slow_start(config_text(1, database_url=host_url))).replace(
                    "[sim]\nport = 0\n", f'[sim]\nport = 0\nurl = "{relay.url}"\n') + CLUSTER.format(node, lease_s)
                system = NamespacedSystem(net, sim.sim_url, workdir / node, config + hooks, database_url=pg_url)
                system.start()
                started.append(system)
                return system

            a, b = host(ha, "vps-a"), host(hb, "vps-b")
            if holder(pg_url) != "vps-a":
                raise AssertionError(f"B holds the sender lease, not A: {holder(pg_url)}")
            yield Lab(a, b, pg, pg_url, relay, server)
        finally:
            for system in reversed(started):
                system.stop()
            for each in relays:
                each.close()
            if sim is not None:
                sim.stop()
            pg.destroy()
