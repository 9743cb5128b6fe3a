"""A small real child for watchdog tests; it speaks sd_notify through watchdog.shared.notify.Notifier.

Options pick the misbehaviour under test: exit after a while with a code, stop
heartbeating while staying alive, grow its memory, hold a session lock like a
bridge, or note the moment it got SIGTERM (stop order). Trailing words
(e.g. `bridge --account main`) are ignored: they only make the command line look
like a component's, as the leftover-process check expects.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from watchdog.shared.notify import Notifier


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ready-after", type=float, default=0.0, help="seconds before READY=1")
    parser.add_argument("--no-ready", action="store_true", help="never send READY=1")
    parser.add_argument("--exit-after", type=float, help="exit this many seconds after READY=1")
    parser.add_argument("--code", type=int, default=1, help="exit code for --exit-after")
    parser.add_argument("--silent-after", type=float, help="stop heartbeating (but keep running) after this long")
    parser.add_argument("--grow-mb", type=int, default=0, help="allocate this much memory after READY=1")
    parser.add_argument("--child-grow-mb", type=int, default=0, help="start a child process that holds this much")
    parser.add_argument("--hold-lock", type=Path, help="flock this file and write our pid into it, like a bridge")
    parser.add_argument("--try-lock", type=Path, help="like a bridge: flock this file or exit 3 (session held)")
    parser.add_argument("--term-log", type=Path, help="append '<label> <time_ns>' here on SIGTERM, then exit 0")
    parser.add_argument("--term-delay", type=float, default=0.0, help="with --term-log: seconds before that exit")
    parser.add_argument("--ignore-term", action="store_true", help="ignore SIGTERM (so only SIGKILL ends it)")
    parser.add_argument("--signal-log", type=Path, help="on SIGTERM, SIGINT or SIGQUIT write its name here, then exit 0")
    parser.add_argument("--dump-env", type=Path, help="write our environment and process group here as JSON")
    parser.add_argument("--busy-before-ready", type=float, default=0.0,
                        help="burn this much CPU time before the first heartbeat (a slow cold start)")
    parser.add_argument("--spin-after-ready", action="store_true", help="after READY=1, spin without heartbeats")
    parser.add_argument("--starve-file", type=Path,
                        help="while this file exists, share one CPU with a CPU hog of our own at a lower priority")
    parser.add_argument("--chunk-cpu", type=float, default=0.3, help="with --starve-file: CPU seconds between heartbeats")
    parser.add_argument("--label", default="worker")
    parser.add_argument("--once-marker", type=Path,
                        help="with --exit-after: only exit if this file does not exist yet (then create it)")
    args, _ = parser.parse_known_args()

    notifier = Notifier()
    interval = int(os.environ.get("WATCHDOG_USEC", "1000000")) / 2_000_000 / 2
    if args.term_log:
        def on_term(signum: int, frame: object) -> None:
            with open(args.term_log, "a", encoding="utf-8") as log:
                log.write(f"{args.label} {time.time_ns()}\n")
            time.sleep(args.term_delay)  # a clean stop that takes a while (a bridge closing its session)
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
    if args.signal_log:
        def on_stop(signum: int, frame: object) -> None:
            args.signal_log.write_text(signal.Signals(signum).name, encoding="utf-8")
            sys.exit(0)
        for stop in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(stop, on_stop)
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.dump_env:
        args.dump_env.write_text(json.dumps({"env": dict(os.environ), "pgid": os.getpgid(0), "pid": os.getpid(),
                                             "cwd": os.getcwd()}))
    for path, blocking in ((args.hold_lock, True), (args.try_lock, False)):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"session {path} is held", file=sys.stderr, flush=True)
                sys.exit(3)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    print(f"{args.label} pid {os.getpid()} started", flush=True)
    burn(args.busy_before_ready)
    notifier.heartbeat()
    time.sleep(args.ready_after)
    if not args.no_ready:
        notifier.ready(f"{args.label} ready")
    ready_at = time.monotonic()
    hog = b""
    if args.grow_mb:
        hog = bytearray(args.grow_mb * 1024 * 1024)
        hog[::4096] = b"x" * len(hog[::4096])  # touch every page so it is resident
    if args.child_grow_mb:
        subprocess.Popen([sys.executable, "-c", f"import time; b = bytearray({args.child_grow_mb} << 20); "
                          "b[::4096] = b'x' * len(b[::4096]); time.sleep(3600)"])
    if args.spin_after_ready:
        while True:
            pass
    if args.starve_file:
        starve(args.starve_file, args.chunk_cpu, notifier)
    exit_now = args.exit_after is not None
    if exit_now and args.once_marker:
        exit_now = not args.once_marker.exists()
        args.once_marker.touch()
    while True:
        elapsed = time.monotonic() - ready_at
        if exit_now and elapsed >= args.exit_after:
            print(f"{args.label} exiting with code {args.code}", file=sys.stderr, flush=True)
            sys.exit(args.code)
        if args.silent_after is None or elapsed < args.silent_after:
            notifier.heartbeat()
        time.sleep(interval)


def burn(cpu_seconds: float) -> None:
    """Use this much CPU time (not wall time: under load it takes longer)."""
    until = time.process_time() + cpu_seconds
    while time.process_time() < until:
        pass


def starve(flag: Path, chunk: float, notifier: Notifier) -> None:
    """Work in CPU chunks with a heartbeat after each; while `flag` exists a hog (same session, so the same
    scheduler autogroup) runs on our CPU at a higher priority: we stay runnable and gain CPU, only slowly."""
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    hog = None
    while True:
        if flag.exists() and hog is None:  # forked at our priority; then we lower ours (no privilege needed)
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            os.nice(10)
        elif not flag.exists() and hog is not None:
            hog.kill()
            hog.wait()
            hog = None
        burn(chunk)
        notifier.heartbeat()


if __name__ == "__main__":
    main()
