"""Step the wall clock of running processes, as NTP correcting a host's time does: libfaketime (Debian's faketime)
preloaded into them, its offset read from a file on every reading of the clock.

The monotonic and boot clocks are left alone (FAKETIME_DONT_FAKE_MONOTONIC), as on a host whose time is
corrected, and because libfaketime's timed waits hang otherwise. Known limit of libfaketime 0.9.10 with
Python 3.11+: `time.sleep` fails with EINVAL in a process it is preloaded into (its clock_nanosleep with
TIMER_ABSTIME, wolfcw/libfaketime#426); asyncio's and threading's waits work.
"""
from __future__ import annotations

import os
from pathlib import Path

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


class FakeClock:
    def __init__(self, workdir: Path) -> None:
        """Raises FileNotFoundError without libfaketime."""
        if not LIBFAKETIME.exists():
            raise FileNotFoundError(f"{LIBFAKETIME}: libfaketime is not installed (Debian: faketime)")
        self.file = workdir / "faketime-offset"
        self.offset = 0
        self.set(0)

    def env(self) -> dict[str, str]:
        """The environment of a process (and its children) whose clock this steps."""
        return {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME_TIMESTAMP_FILE": str(self.file), "FAKETIME_NO_CACHE": "1",
                "FAKETIME_DONT_FAKE_MONOTONIC": "1"}

    def set(self, offset: int) -> None:
        """Their wall clock `offset` seconds off the true time from now on (a rename: never read half written)."""
        part = self.file.with_name(self.file.name + ".new")
        part.write_text(f"{offset:+d}\n")
        os.replace(part, self.file)
        self.offset = offset
