"""The recovery benchmark's markdown report: one row per supervisor, the notes, the cost line."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from scripts.benchmarks.recovery_measure import POLL_INTERVAL, Result, percentile
from scripts.benchmarks.recovery_procs import WATCHDOG_TUNING, bridge_argv
from scripts.benchmarks.recovery_runs import OURS_COLD, OURS_WARM


def _ms(value: float) -> str:
    return f"{value:.0f} ms"


def hang_cell(result: Result) -> str:
    if not result.hangs_ms:
        return "-"
    done = [h for h in result.hangs_ms if h is not None]
    if not done:
        return f"never (waited {result.hang_wait:g} s)"
    cell = f"p50 {percentile(done, 50) / 1000:.2f} s, max {max(done) / 1000:.2f} s (n={len(done)})"
    missed = len(result.hangs_ms) - len(done)
    return cell + (f", {missed} never" if missed else "")


def report(results: list[Result], cost: str, command: str, args: argparse.Namespace) -> str:
    ours = next((r for r in results if r.supervisor == OURS_COLD and r.kills_ms), None)
    ours_p50 = percentile(ours.kills_ms, 50) if ours else None
    lines = ["| supervisor | kill->healthy p50 | p95 | max | p50 vs ours | hang->healthy |",
             "|---|---|---|---|---|---|"]
    for r in results:
        if not r.kills_ms:
            reason = (r.error or "no samples").splitlines()[0].replace("|", "/")
            lines.append(f"| {r.supervisor} | - | - | - | - | {reason[:160]} |")
            continue
        p50 = percentile(r.kills_ms, 50)
        ratio = f"{p50 / ours_p50:.2f}x" if ours_p50 else "-"
        lines.append(f"| {r.supervisor} | {_ms(p50)} | {_ms(percentile(r.kills_ms, 95))} | {_ms(max(r.kills_ms))} "
                     f"| {ratio} | {hang_cell(r)} |")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    notes = [f"- {r.supervisor}: {'; '.join(r.notes + ([r.error] if r.error else []))}"
             for r in results if r.notes or r.error]
    return "\n".join([
        *lines, "",
        f"{args.kills} SIGKILLs per supervisor, each after {args.settle:g} s of steady health; time from the kill "
        f"until a new pid answers GET /api/health 200 (polled every {POLL_INTERVAL * 1000:g} ms, keep-alive); "
        f"p95 is nearest-rank. The floor row is exec -> healthy of the bridge started by hand, no supervisor. "
        f"Hang: SIGSTOP once the bridge has been up {args.hang_settle:g} s (past the probes' initial_delay) plus a "
        f"random part of its {args.hang_phase:g} s heartbeat period, then the same wait, up to {args.hang_wait:g} s, "
        f"{args.hangs} tries (one, if the first is never noticed). "
        f"Ratio = that supervisor's p50 / ours with cold restarts (row `{OURS_COLD}`, `standby = false`; above 1 = "
        f"slower). `{OURS_WARM}`: the default `standby = true`, a second bridge already loaded and blocked on the "
        f"session lock takes over (its notes say for how many restarts).",
        f"Same child everywhere: `{' '.join(bridge_argv(Path('CONFIG')))}` on `wa-watchdog sim`. "
        f"wa-watchdog config: probes and watchdog_sec at defaults; "
        + ", ".join(f"{k} = {v}" for k, v in WATCHDOG_TUNING.items()) + " (healthy that long resets backoff; --settle is longer).",
        *notes, "",
        *([cost, ""] if cost else []),
        f"Machine: {os.cpu_count()} CPUs, load average {load} at the end. Command: `{command}`",
    ])
