"""`scripts/bench recovery`: kill/hang -> healthy for the same bridge under our watchdog, supervisord and systemd.

One run, one child: `python -m watchdog.cli bridge --account main` on the
simulator, with the bridge API on one fixed free port so every supervisor's
bridge answers on the same URL. Our watchdog runs twice: with a cold restart
(`standby = false`) and with its warm standby (the default), which takes over
without a cold start. For each supervisor:

- SIGKILL the bridge N times (after it has been healthy and settled) and time
  kill -> a *new* pid answers `GET /api/health` 200 (polled every few ms on a
  keep-alive connection);
- SIGSTOP it a few times and time stop -> a new pid is healthy, or report
  that the supervisor never noticed within a bounded wait.

systemd runs as a user manager inside `unshare -m` (the recipe in
shared/SYSTEMD-SANDBOX.md): this script re-executes its systemd part as a
subprocess under `unshare -m` and reads back JSON. Finally our watchdog's own
CPU and resident memory are sampled while it supervises ten children.

Every process started here is ended by pid; every wait has a deadline. This
module reads the arguments and runs the parts: recovery_procs.py (processes,
config), recovery_measure.py (the kill and hang timings), recovery_runs.py
(ours, the floor, supervisord), recovery_systemd.py, recovery_cost.py,
recovery_report.py.
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scripts.benchmarks.recovery_cost import measure_cost
from scripts.benchmarks.recovery_measure import Result
from scripts.benchmarks.recovery_procs import ACCOUNT, config_text, free_port, load_config, printer
from scripts.benchmarks.recovery_report import report
from scripts.benchmarks.recovery_runs import run_floor, run_ours, run_supervisord
from scripts.benchmarks.recovery_systemd import run_systemd, systemd_worker


PARTS = ("floor", "ours", "supervisord", "systemd", "cost")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench recovery --", description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs per supervisor (default 20)")
    parser.add_argument("--hangs", type=int, default=3, help="SIGSTOP tries per supervisor (default 3)")
    parser.add_argument("--hang-wait", type=float, default=15.0, help="give up on a hang after this many s (default 15)")
    parser.add_argument("--settle", type=float, default=1.0, help="healthy this long before each kill (default 1 s)")
    parser.add_argument("--start-timeout", type=float, default=60.0, help="first start deadline (default 60 s)")
    parser.add_argument("--recover-timeout", type=float, default=20.0, help="kill -> healthy deadline (default 20 s)")
    parser.add_argument("--children", type=int, default=10, help="children for the cost sample (default 10)")
    parser.add_argument("--cost-seconds", type=float, default=20.0, help="cost sampling time (default 20 s)")
    parser.add_argument("--only", action="append", choices=PARTS,
                        help="run only these parts (repeatable; default all)")
    parser.add_argument("--output", type=Path, help="also write the markdown report to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs) and print it")
    parser.add_argument("--systemd-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.kills < 1 or args.hangs < 0 or args.children < 2:
        parser.error("--kills must be >= 1, --hangs >= 0, --children >= 2")
    return args


def _missing_pieces(parts: set[str]) -> list[str]:
    needed = {"bridge.main": "wa-watchdog bridge", "bridge.simulator.server": "wa-watchdog sim"}
    if parts & {"ours", "cost"}:
        needed["watchdog.core.arbiter"] = "wa-watchdog run"
    if "cost" in parts:
        needed["monitors.main"] = "wa-watchdog monitor"
    return [f"{command} ({module} not found)" for module, command in needed.items()
            if importlib.util.find_spec(module) is None]


@contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="wa-recovery-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.systemd_worker:
        return systemd_worker(args.systemd_worker)
    parts = set(args.only or PARTS)
    missing = _missing_pieces(parts)
    if missing:
        print(f"recovery benchmark: missing pieces: {'; '.join(missing)}", file=sys.stderr)
        return 1
    log = printer()
    command = "scripts/bench recovery" + (" -- " + " ".join(argv) if argv else "")
    with workspace(args.keep) as work:
        port = free_port()
        config = work / "wa.toml"
        config.write_text(config_text(api_port=port, projects=0))
        account = load_config(config).account(ACCOUNT)
        # probes start initial_delay after a (re)start: a hang is only fair to time once they run
        args.hang_settle = max(args.settle, account.probe.initial_delay + account.probe.period)
        args.hang_phase = account.watchdog_sec / 2  # the bridge's heartbeat period
        log(f"bridge api on 127.0.0.1:{port}; work dir {work}")
        results: list[Result] = []
        if "ours" in parts:
            results.append(run_ours(args, work, port, log, standby=False))
            results.append(run_ours(args, work, port, log, standby=True))
        if "supervisord" in parts:
            results.append(run_supervisord(args, work, config, port, log))
        if "systemd" in parts:
            results.extend(run_systemd(args, work, config, port, log))
        if "floor" in parts:
            results.append(run_floor(args, work, config, port, log))
        cost, cost_ok = measure_cost(args, work, log) if "cost" in parts else ("", True)
        text = report(results, cost, command, args)
    print(text)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    return 0 if cost_ok and all(not r.error or r.error.startswith("skipped") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
