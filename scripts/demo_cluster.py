"""The smallest cluster (issue 21) on this machine, in the foreground: a throwaway PostgreSQL (tests/pg.py),
one simulator (`wa-watchdog sim`), and two `wa-watchdog run` (nodes vps-a and vps-b), each with its own data
dir and linked device of the one number. Ctrl-C (or SIGTERM) stops all of it, by the pids it started.

    scripts/demo --cluster [--dir var/demo-cluster]

What it started is written to <dir>/cluster.json (the PostgreSQL URL, the simulator's URL, each host's config)
once both hosts are healthy.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
from pathlib import Path
from threading import Event

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.benchmarks.system_run import ROOT, RunningSystem, config_text, group_jid  # noqa: E402
from tests.pg import PgCluster, find_bin_dir  # noqa: E402
from watchdog.shared import file_modes  # noqa: E402

CLUSTER = '\n[cluster]\nnode = "{}"\nlease_s = 5\n'
PROJECTS = 2


def host_configs(pg_url: str, sim_url: str | None) -> tuple[str, str]:
    """vps-a's config (its run does not start the simulator: the demo runs it alone) and vps-b's, which uses
    the simulator at `sim_url` (known once it runs; None: a placeholder)."""
    a = config_text(PROJECTS, database_url=pg_url, separate_sim=True) + CLUSTER.format("vps-a")
    b = config_text(PROJECTS, database_url=pg_url).replace(
        "[sim]\nport = 0\n", f'[sim]\nport = 0\nurl = "{sim_url or ""}"\n') + CLUSTER.format("vps-b")
    return a, b


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo --cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "var/demo-cluster",
                        help="where the hosts' data dirs go (emptied first)")
    args = parser.parse_args(argv)
    bin_dir, why = find_bin_dir()
    if bin_dir is None:
        print(f"demo --cluster: {why}", file=sys.stderr)
        return 2
    for signum in (signal.SIGINT, signal.SIGTERM):  # SIGTERM as Ctrl-C; SIGINT too when started ignoring it (&)
        signal.signal(signum, signal.default_int_handler)
    work = args.dir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pg = PgCluster(bin_dir)
    hosts: list[RunningSystem] = []
    try:
        pg.start()
        url = pg.create_database("wa_demo")
        print(f"PostgreSQL {url} (in {pg.root})", file=sys.stderr)
        a_config, _ = host_configs(url, None)
        hosts.append(RunningSystem(work / "vps-a", a_config, url, separate_sim=True))
        hosts[0].start(timeout=120)
        _, b_config = host_configs(url, hosts[0].sim_url)
        hosts.append(RunningSystem(work / "vps-b", b_config, url))
        hosts[1].start(timeout=120)
        state = {"database": url, "sim": hosts[0].sim_url, "pids": {"vps-a": hosts[0].proc.pid,
                 "vps-b": hosts[1].proc.pid, "sim": hosts[0].sim_proc.pid},
                 "hosts": {h.workdir.name: str(h.config_path) for h in hosts}}
        file_modes.write_atomic(work / "cluster.json", json.dumps(state, indent=2))
        wa = ROOT / ".venv/bin/wa-watchdog"
        print("\n".join([
            "the cluster is up: two hosts (vps-a, vps-b), one simulator, one PostgreSQL. In another shell try:",
            *(f"  {wa} status --config {h.config_path}" for h in hosts),
            f"  curl -s -X POST {state['sim']}/sim/inject -H 'Content-Type: application/json' -d '{{\"chat_jid\": "
            f"\"{group_jid(1)}\", \"sender_jid\": \"27710000001@s.whatsapp.net\", \"text\": \"DR1734150 installed\"}}'",
            f"  {wa} drops --config {hosts[1].config_path}",
            f"  kill {hosts[0].proc.pid}   # stop vps-a: vps-b records on, takes over sending, alerts node_silent",
            "Ctrl-C stops everything."]), file=sys.stderr, flush=True)
        Event().wait()
    except KeyboardInterrupt:
        print("stopping the cluster", file=sys.stderr)
        return 0
    finally:
        for host in reversed(hosts):
            host.stop()  # its run, then (vps-a) the simulator: Popen pids, never a search by name
        pg.destroy()


if __name__ == "__main__":
    sys.exit(main())
