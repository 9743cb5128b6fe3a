"""What a chaos run found (scripts/benchmarks/chaos.py): the counts and lists it checks, and their table."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class Report:
    posted: int = 0
    recorded: int = 0
    missed: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    misattributed: list[str] = field(default_factory=list)
    ack_missing: list[str] = field(default_factory=list)
    ack_duplicates: list[str] = field(default_factory=list)
    outage_posts: int = 0
    not_backfilled: list[str] = field(default_factory=list)
    events_missing: list[str] = field(default_factory=list)  # no drop.recorded/backfilled event in the outbox
    events_duplicated: list[str] = field(default_factory=list)
    webhook_lost: list[str] = field(default_factory=list)  # drops whose outbox event the receiver never got
    webhook_unknown: list[str] = field(default_factory=list)  # received events of no recorded drop
    webhook_bad_signatures: int = 0
    webhook_redelivered: int = 0  # deliveries of an id already received (after a kill): deduped by the receiver
    pg_restarts: int = 0
    kills: Counter = field(default_factory=Counter)
    disconnects: int = 0
    pauses: int = 0
    paused_s: float = 0.0
    hangs: int = 0  # children the watchdog judged hung: no blow hangs one, so a pause must not make it think so
    clock_steps: int = 0
    clock_steps_recorded: int = 0  # clock_step records the watchdog wrote
    restores: int = 0
    unclean_stops: int = 0  # a restore's SIGTERM to the watchdog that did not end in exit code 0
    restore_stops: list[datetime] = field(default_factory=list)  # when each restore stopped the system
    posted_while_stopped: list[str] = field(default_factory=list)
    unreported_windows: list[str] = field(default_factory=list)  # closed windows some monitor never reported
    quiescent: bool = True  # False: the run timed out waiting for quiescence (the table still says what is wrong)
    windows: int = 0
    longest_outage_s: float = 0.0
    longest_outage_of: str = ""
    seconds: float = 0.0
    quiesced_in_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.quiescent and not (
            self.hangs or self.unclean_stops or self.missed or self.duplicated or self.misattributed
            or self.ack_missing or self.ack_duplicates or self.not_backfilled or self.unreported_windows
            or self.events_missing or self.events_duplicated or self.webhook_lost or self.webhook_unknown
            or self.webhook_bad_signatures or self.clock_steps_recorded != self.clock_steps)

    def table(self) -> str:
        kills = ", ".join(f"{n} {name}" for name, n in sorted(self.kills.items())) or "none"
        settled = "quiescent" if self.quiescent else "NOT quiescent (gave up)"
        stopped_missed = sorted(set(self.posted_while_stopped) & set(self.missed))
        rows = [
            ("duration", f"{self.seconds:.0f} s of chaos, {settled} {self.quiesced_in_s:.1f} s later"),
            ("drops posted", self.posted),
            ("drops recorded", self.recorded),
            ("missed", _listed(self.missed)),
            ("duplicated", _listed(self.duplicated)),
            ("wrong group or submitter", _listed(self.misattributed)),
            ("acknowledgements missing", _listed(self.ack_missing)),
            ("feedback duplicates", _listed(self.ack_duplicates)),
            ("posted during an outage", f"{self.outage_posts} (not marked backfilled: "
                                        f"{_listed(self.not_backfilled)})"),
            ("drop events missing / twice in the outbox", f"{_listed(self.events_missing)} / "
                                                          f"{_listed(self.events_duplicated)}"),
            ("drop events lost on the way to the receiver", _listed(self.webhook_lost)),
            ("received for no recorded drop / bad signatures", f"{_listed(self.webhook_unknown)} / "
                                                               f"{self.webhook_bad_signatures}"),
            ("redelivered (same webhook-id, deduped)", self.webhook_redelivered),
            ("PostgreSQL crashes (restarted)", self.pg_restarts),
            ("kills (SIGKILL)", f"{sum(self.kills.values())}: {kills}"),
            ("server disconnects", self.disconnects),
            ("watchdog paused (SIGSTOP)", f"{self.pauses} times, {self.paused_s:.0f} s in all"),
            ("children judged hung (target 0)", self.hangs),
            ("wall clock steps of an hour (recorded)", f"{self.clock_steps} ({self.clock_steps_recorded})"),
            ("restores of messages.db (backup, bridge kill, stop, restore, start)",
             f"{self.restores} ({self.unclean_stops} unclean stops)"),
            ("posted while stopped (until healthy) for a restore (missed)",
             f"{len(self.posted_while_stopped)} ({_listed(stopped_missed)})"),
            ("disconnect windows (not reported by every monitor)",
             f"{self.windows} ({_listed(self.unreported_windows)})"),
            ("longest outage", f"{self.longest_outage_s:.2f} s ({self.longest_outage_of or '-'})"),
        ]
        return "| | |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows)


def _listed(items: list[str]) -> str:
    return str(len(items)) + (f" ({', '.join(items[:10])}{' ...' if len(items) > 10 else ''})" if items else "")
