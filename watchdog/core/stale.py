"""Processes left over from an earlier watchdog run, found before a component is started again.

A watchdog that was killed (or frozen and replaced by systemd) may leave its
children running. Two bridges on one WhatsApp session fight over it, so before
starting a component we look at the pids it left behind (the session lock, its
published endpoint file) and stop any that is still alive *and* whose command
line says it is that component (a reused pid belongs to someone else).
Monitors publish no endpoints, so the watchdog also keeps a list of its children,
a bridge's warm standby under `<component>#standby` (it holds nothing else that names it).
"""
from __future__ import annotations

import json
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
from loguru import logger

from watchdog.shared import endpoints, file_modes
from watchdog.core.child import wait_gone

if TYPE_CHECKING:
    from watchdog.shared.programs import Program
    from watchdog.core.recovery import Records

CHILDREN_FILE = "watchdog-children.json"  # in the run directory: {component: pid} of the watchdog's children
STANDBY_SUFFIX = "#standby"


def standby_name(component: str) -> str:
    """The key of a component's warm standby in the list of children, e.g. `bridge:main#standby`."""
    return component + STANDBY_SUFFIX


def component_of(name: str) -> str:
    """The component a list-of-children key belongs to (`bridge:main#standby` -> `bridge:main`)."""
    return name.removesuffix(STANDBY_SUFFIX)


def record_children(data_dir: Path, children: dict[str, int]) -> bool:
    """Remember which pid runs each component, so the next watchdog can find what this one leaves behind.

    False when it cannot be written (a full disk): logged, never raised into the state change that asked,
    and the caller writes it again at the next change."""
    path = endpoints.run_dir(data_dir) / CHILDREN_FILE
    try:
        file_modes.ensure_dir(path.parent, file_modes.PRIVATE_DIR)
        file_modes.write_atomic(path, json.dumps(children))
    except OSError as exc:
        logger.error("cannot record the running children in {} ({}): a watchdog started after this one may not "
                     "find them", path, exc.strerror or exc)
        return False
    return True


def recorded_children(data_dir: Path) -> dict[str, int]:
    try:
        children = json.loads((endpoints.run_dir(data_dir) / CHILDREN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return children if isinstance(children, dict) else {}


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return None


def runs(cmdline: Sequence[str], signature: Sequence[Sequence[str]]) -> bool:
    """True if every group of words in `signature` appears, in order and adjacent, in `cmdline`."""
    def has(group: Sequence[str]) -> bool:
        n = len(group)
        return any(list(cmdline[i:i + n]) == list(group) for i in range(len(cmdline) - n + 1))
    return all(has(group) for group in signature)


def stale_pids(component: str, signature: Sequence[Sequence[str]], data_dir: Path,
               pidfile: Path | None = None) -> list[int]:
    """Live pids of earlier instances of `component`: named by its pidfile (a bridge's session lock), its
    published endpoints, or the previous watchdog's list of children (its standby first: stopped after the
    owner, it would take over)."""
    children = recorded_children(data_dir)
    candidates = [children.get(standby_name(component)), children.get(component)]
    if pidfile is not None:
        candidates.append(_pid_in(pidfile))
    record = endpoints.read(data_dir, component)
    if record:
        candidates.append(record.get("pid"))
    found = []
    for pid in dict.fromkeys(candidates):
        if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
            continue
        try:
            process = psutil.Process(pid)
            if process.status() != psutil.STATUS_ZOMBIE and runs(process.cmdline(), signature):
                found.append(pid)
        except psutil.Error:
            continue
    return found


async def stop_pid(pid: int, grace: float) -> str:
    """SIGTERM (and SIGCONT, in case it is frozen), then SIGKILL after `grace`; says which one ended it."""
    try:
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        return "already gone"
    if await wait_gone(pid, grace):
        return "SIGTERM"
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return "SIGTERM"
    await wait_gone(pid, 5.0)
    return "SIGKILL"


def leftovers(program: Program, data_dir: Path, ours: Sequence[int | None]) -> list[int]:
    """Live pids of earlier instances of `program` other than `ours` (its current child and standby)."""
    return [pid for pid in stale_pids(program.name, program.leftover_signature, data_dir, program.pidfile)
            if pid not in ours]


async def stop_leftovers(program: Program, data_dir: Path, ours: Sequence[int | None], grace: float,
                         records: Records) -> None:
    """Stop every leftover of `program` (SIGTERM, SIGKILL after `grace`), each logged and recorded."""
    where = f"named by {program.pidfile}" if program.pidfile else "its endpoints"
    for pid in leftovers(program, data_dir, ours):
        how = await stop_pid(pid, grace)
        logger.warning("{}: stopped pid {} left over from an earlier run ({}, by {})", program.name, pid, where, how)
        records.add("stop", pid=pid, cause=f"left over from an earlier run, {where}",
                    message=f"stopped by {how} before starting a new instance")
