"""Faults of the host for tests: a small tmpfs in a private mount namespace, another local user, a network
namespace whose packets can be dropped. Each skips (with the reason) where the machine does not permit it."""
from __future__ import annotations

import ctypes
import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from scripts.benchmarks.cluster_lab import CLONE_NEWNET, libc, which


class SmallDisk:
    """A tmpfs of `size` mounted at `path` inside a private mount namespace held open by a sleeping process.

    Commands run inside with `command(...)`; this process reaches the files through `/proc/<holder>/root`.
    """

    def __init__(self, path: Path, holder: subprocess.Popen) -> None:
        self.path = path
        self.holder = holder
        self.outside = Path(f"/proc/{holder.pid}/root") / path.relative_to("/")

    def command(self, *argv: str) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-m", "--", *argv]

    def fill(self) -> Path:
        """Write a filler file until the disk is full; returns it (delete it to free the space)."""
        filler = self.outside / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        return filler


@contextmanager
def small_disk(path: Path, size: str = "4m") -> Iterator[SmallDisk]:
    if os.geteuid() != 0 or not which("unshare") or not which("nsenter"):
        pytest.skip("a private tmpfs needs root, unshare and nsenter")
    path.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(["unshare", "-m", "sh", "-c",
                               f"mount -t tmpfs -o size={size},mode=0750 tmpfs {path} && echo mounted && exec sleep 600"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if holder.stdout.readline() != b"mounted\n":  # type: ignore[union-attr]
            holder.wait(5)
            pytest.skip(f"cannot mount a tmpfs in a private mount namespace: "
                        f"{holder.stderr.read().decode().strip()}")  # type: ignore[union-attr]
        yield SmallDisk(path, holder)
    finally:
        holder.kill()
        holder.wait()
        for stream in (holder.stdout, holder.stderr):
            if stream:
                stream.close()


def as_nobody(*argv: str) -> subprocess.CompletedProcess:
    """Run a command as the unprivileged user `nobody` (root only; skips otherwise)."""
    if os.geteuid() != 0 or not which("runuser"):
        pytest.skip("running a check as another user needs root and runuser")
    return subprocess.run(["runuser", "-u", "nobody", "--", *argv], capture_output=True, text=True, timeout=30)


def world_traversable_dir() -> Path:
    """A fresh directory other users can traverse (pytest's tmp_path is 0700: every check would pass vacuously)."""
    base = Path(tempfile.mkdtemp(prefix="wa-host-faults-"))
    base.chmod(0o755)
    return base


# -- a network namespace of our own, entered by this thread (and inherited by the children it starts) ---------

@contextmanager
def own_network() -> Iterator[None]:
    """This thread in a new network namespace with only `lo` up, for as long as the block runs.

    Children started meanwhile live in it too, so iptables rules made here touch nobody else.
    """
    if os.geteuid() != 0 or not which("iptables") or not which("ip"):
        pytest.skip("a network namespace with iptables needs root, ip and iptables")
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            pytest.skip(f"unshare(CLONE_NEWNET) not permitted: {os.strerror(ctypes.get_errno())}")
        subprocess.run([which("ip"), "link", "set", "lo", "up"], check=True, timeout=10)
        yield
    finally:
        libc.setns(original, CLONE_NEWNET)
        os.close(original)


def drop_port(port: int, drop: bool = True) -> None:
    """Silently drop (no RST, no FIN) every TCP packet to or from `port` in this namespace, or stop doing so."""
    action = "-A" if drop else "-D"
    for chain, direction in (("INPUT", "--dport"), ("INPUT", "--sport")):
        subprocess.run([which("iptables"), action, chain, "-p", "tcp", direction, str(port), "-j", "DROP"],
                       check=True, timeout=10)

