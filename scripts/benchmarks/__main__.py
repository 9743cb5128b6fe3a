"""`scripts/bench [NAME ...] [-- ARGS]`: run the benchmarks and print their markdown tables.

Each benchmark is a module here with `main(argv) -> int`; every one starts its
own real processes on free ports in a temporary directory and ends them.
"""
from __future__ import annotations

import importlib
import sys
import time

BENCHMARKS = {
    "bridge": ("scripts.benchmarks.bridge_bench", "message ingest rate and /api/send latency"),
    "drops": ("scripts.benchmarks.drop_latency", "sim post -> drop row latency, six projects, drops.db vs PostgreSQL"),
    "drops-query": ("scripts.benchmarks.drops_query", "the drops API's queries on 100,000 drops, drops.db vs PostgreSQL"),
    "recovery": ("scripts.benchmarks.recovery_bench", "kill/hang -> healthy: ours vs supervisord vs systemd"),
    "console": ("scripts.benchmarks.console_bench", "console page time at 30 components / 10,000 records; live update"),
    "retention": ("scripts.benchmarks.retention", "storage growth per message: messages.db, drops.db, logs"),
    "windows": ("scripts.benchmarks.outage_windows", "recorded outage windows vs the real outage (kill -9, disconnect)"),
    "scale": ("scripts.benchmarks.scale_bench", "6-100 projects: start, idle CPU, memory, drops; template vs exec"),
    "api": ("scripts.benchmarks.api_bench", "GET /api/drops of 100 rows out of 100,000 (drops-api)"),
    "webhooks": ("scripts.benchmarks.webhook_latency", "simulator post -> signed webhook received"),
    "inputs": ("scripts.benchmarks.inputs_bench", "hostile inputs vs a real bridge: answers and health latency"),
    "lease": ("scripts.benchmarks.lease_bench", "the sender lease: statement cost, takeover after kill -9 / SIGSTOP"),
    "sending": ("scripts.benchmarks.sending_bench", "100 drops in a minute at the default pace: coalesced, killed, banned"),
    "cluster": ("scripts.benchmarks.cluster_bench", "two hosts: drop latency, idle CPU, lease traffic; A killed/paused"),
    "fate": ("scripts.benchmarks.fate_bench", "two hosts: an ack in flight when A is killed, found or sent by B"),
}


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        for name, (_, what) in BENCHMARKS.items():
            print(f"  {name:<9} {what}")
        return 0
    names, rest = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    status = 0
    for name in names or list(BENCHMARKS):
        module, what = BENCHMARKS[name]
        print(f"\n## {name}: {what}\n", flush=True)
        started = time.monotonic()
        status |= importlib.import_module(module).main(rest)
        print(f"\n({name} took {time.monotonic() - started:.0f} s)", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
