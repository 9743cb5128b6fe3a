"""Storage growth per message: messages.db, drops.db and the logs of a real system, for docs/OPERATIONS.md.

A whole system under `wa-watchdog run` (simulator, bridge, six monitors) is
sent N live group messages, one at a time as contractors post them: one in
four carries a drop number (so the monitor records a drop and the bridge
sends and stores its acknowledgement), the rest is chat. After a clean stop
(SQLite checkpoints its WAL) the growth of each file is divided by N.
"""
from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

from scripts.benchmarks.system_run import CONTRACTORS, RunningSystem, config_text, group_jid, wait_for

CHAT = ("ok thanks", "pole 14 done, moving to the next street", "photo sent, please check",
        "team on site from 8, trenching on Main Rd", "who has the splicing kit today?")
PROJECTS = 6
MONTH_DAYS = 30


def _sizes(data_dir: Path) -> dict[str, int]:
    def size(*patterns: str) -> int:
        return sum(p.stat().st_size for pattern in patterns for p in data_dir.glob(pattern) if p.is_file())
    return {"messages.db": size("accounts/*/messages.db"), "drops.db": size("drops.db"),
            "logs": size("logs/*.log*"), "recovery log": size("recoveries.jsonl*")}  # (-wal: bounded, not history)


def run(messages: int, workdir: Path) -> tuple[dict[str, int], dict[str, int], int]:
    system = RunningSystem(workdir, config_text(PROJECTS))
    system.start()
    try:
        before = _sizes(system.data_dir)
        drops = 0
        for n, contractor in zip(range(messages), itertools.cycle(CONTRACTORS)):
            group = group_jid(n % PROJECTS + 1)
            if n % 4 == 0:
                drops += 1
                text = f"DR{1700000 + n} pole {n % 40 + 1} installed, photo to follow"
            else:
                text = CHAT[n % len(CHAT)]
            system.inject(group, contractor, text)
        wait_for(lambda: system.query("messages", "SELECT COUNT(*) FROM messages WHERE is_from_me = 1")
                 == [(drops,)], 120, "every drop acknowledged")
    finally:
        system.stop()
    return before, _sizes(system.data_dir), drops


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench retention")
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wa-retention-") as tmp:
        before, after, drops = run(args.messages, Path(tmp))
    n = args.messages
    print(f"{n} group messages posted live ({drops} with a drop number, each acknowledged in its group)\n")
    print("| file | growth | bytes per posted message | per month at 1,000 / 10,000 / 50,000 messages a day |")
    print("|---|---|---|---|")
    for name in before:
        grown = after[name] - before[name]
        per = grown / n
        month = " / ".join(f"{per * rate * MONTH_DAYS / 1e6:,.1f} MB" for rate in (1_000, 10_000, 50_000))
        print(f"| {name} | {grown:,} B | {per:,.0f} | {month} |")
    return 0
