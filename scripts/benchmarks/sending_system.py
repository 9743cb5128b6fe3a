"""`scripts/bench sending` through a real monitor: the burst posted into the simulator as the contractors' messages,
the monitor recording each drop and coalescing its message acknowledgements (`feedback.ack = "message"`, the default
`coalesce_s` and `coalesce_max_s`), the bridges sending them at the default pace. The pace and the coalescing window are sped up SPEEDUP
times (sending_bench.py), so a run takes about a minute; times that the pace governs are scaled back, the failover
time (the monitor's and bridges' own machinery) is not.

Two runs:
- coalesced: one number, which listens and sends.
- ban: `send_accounts = ["main", "backup"]`, both in every group, a third number listening (a ban disconnects a
  number: the listening one would stop seeing drops). Once half the drops are posted, the simulator is told to
  answer main's next send with rate-overlimit and a temporary ban of BAN_S s (POST /sim/limits). Measured: every
  drop acknowledged (by which number), and the failover time: main's bridge seeing the ban (its health polled every
  10 ms) -> the first acknowledgement the backup sends. Acknowledgements already in main's outbox are taken back on
  the failover (POST /api/withdraw) and sent by the backup; any that still went from main after the ban ended (one
  being handed to WhatsApp at that moment) are counted as "waited out the ban".
"""
from __future__ import annotations

import json
import re
import tempfile
import time
import urllib.error
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from bridge.pace import PaceConfig
from monitors.config import FeedbackConfig
from scripts.benchmarks.bridge_bench import _start, _stop, _wait
from scripts.benchmarks.sending_bench import (DROPS, GROUPS, PHONE, SPEEDUP, burst, group_jid, peak_per_minute, post,
                                              sped_up)
from watchdog.shared import clock, endpoints

BACKUP, LISTEN = "27718000000", "27719000000"
BAN_S = 30  # real seconds: 10 minutes of the default pace (a real temporary ban lasts hours)
DROP = re.compile(r"\bDR\d{7}\b")


def config(ban: bool) -> str:
    pace = sped_up(PaceConfig())
    members = ", ".join(f'"{phone}"' for phone in (PHONE, BACKUP, LISTEN))  # the contractors post as guests
    groups = "".join(f'\n[[sim.groups]]\njid = "{group_jid(n)}"\nname = "Group {n}"\nparticipants = [{members}]\n'
                     for n in range(1, GROUPS + 1))
    accounts = "".join(f'\n[accounts.{name}]\ntransport = "sim"\nphone = "{phone}"\napi_port = 0\nsend_wait_s = 0\n'
                       f'{pace}\n' for name, phone in accounts_of(ban).items())
    listed = ", ".join(f'"{group_jid(n)}"' for n in range(1, GROUPS + 1))
    sending = 'listen_account = "listen"\nsend_accounts = ["main", "backup"]\n' if ban else ""
    return (f'data_dir = "data"\n[sim]\nport = 0\n{groups}{accounts}\n[[projects]]\nname = "p1"\ngroups = [{listed}]\n'
            f'{sending}feedback = {{ ack = "message", coalesce_s = {FeedbackConfig().coalesce_s / SPEEDUP:g}, '
            f'coalesce_max_s = {FeedbackConfig().coalesce_max_s / SPEEDUP:g} }}\n')


def accounts_of(ban: bool) -> dict[str, str]:
    return {"main": PHONE, **({"backup": BACKUP, "listen": LISTEN} if ban else {})}


def state(url: str) -> str:
    """The bridge's state from GET /api/health (200 or 503 both say it; '' if it does not answer)."""
    try:
        return str(post(url, "/api/health").get("state", ""))
    except urllib.error.HTTPError as exc:
        try:
            return str(json.loads(exc.read()).get("state", ""))
        except ValueError:
            return ""
    except OSError:
        return ""


def when_banned(sim: str, url: str) -> float:
    """The moment (wall seconds) main's bridge at `url` is first seen in `temporary_ban`; then its limits are lifted
    (the ban runs out by itself, and main is not banned again for its next sends)."""
    _wait(lambda: state(url) == "temporary_ban", 60, "main's bridge to see the ban", 0.01)
    seen = clock.now_s()
    post(sim, "/sim/limits", {"session": PHONE})
    return seen


def acked(out: list[dict]) -> set[str]:
    return {drop for m in out for drop in DROP.findall(m["text"])}


def run(workdir: Path, ban: bool) -> dict:
    """One run; the messages sent (with their drops, number and time) and what the bench saw."""
    path = workdir / "wa.toml"
    path.write_text(config(ban), encoding="utf-8")
    data = workdir / "data"
    started = [_start(path, "sim", log=workdir / "sim.log")]
    try:
        sim = endpoints.wait_url(data, "sim", timeout=20)
        names = list(accounts_of(ban))
        started += [_start(path, "bridge", "--account", name, log=workdir / f"bridge-{name}.log") for name in names]
        urls = {name: _wait(lambda name=name: endpoints.url(data, f"bridge:{name}"), 30, f"bridge:{name}", 0.01)
                for name in names}
        for name, url in urls.items():
            _wait(lambda url=url: state(url) == "connected", 30, f"bridge:{name} to connect", 0.05)
        started.append(_start(path, "monitor", "--project", "p1", log=workdir / "monitor.log"))
        time.sleep(PaceConfig().ramp_s / SPEEDUP)  # the bridges' ramp after connecting: the steady state
        posted: dict[str, float] = {}
        seen_banned = None
        with ThreadPoolExecutor(1) as pool:
            start = time.monotonic()
            for i, (at, n, chat, who) in enumerate(burst()):
                time.sleep(max(0.0, start + at / SPEEDUP - time.monotonic()))
                post(sim, "/sim/inject", {"chat_jid": chat, "sender_jid": f"{who}@s.whatsapp.net",
                                          "text": f"DR{n} installed"})
                posted[f"DR{n}"] = clock.now_s()
                if ban and i + 1 == DROPS // 2:
                    post(sim, "/sim/limits", {"session": PHONE, "per_minute": 1, "ban_after": 1, "ban_s": BAN_S})
                    seen_banned = pool.submit(when_banned, sim, urls["main"])
            _wait(lambda: acked(sent_all(sim)) >= set(posted), 300 + (BAN_S if ban else 0), "every drop acknowledged",
                  0.2)
            time.sleep(2.0)  # anything sent twice would arrive now
            out = sent_all(sim)
            banned_at = seen_banned.result() if seen_banned else None
    finally:
        for proc in reversed(started):
            _stop(proc)
    return {"out": out, "posted": posted, "banned_at": banned_at}


def sent_all(sim: str) -> list[dict]:
    """What every number sent, with its moment (wall seconds)."""
    return [{**m, "at": datetime.fromisoformat(m["time"]).timestamp()} for m in post(sim, "/sim/sent")]


def figures(result: dict) -> dict[str, float]:
    """Messages per number, drops acknowledged (lost, twice), longest drop -> ack gap and peak per 60 s (scaled)."""
    out, posted, banned_at = result["out"], result["posted"], result["banned_at"]
    carried = Counter(drop for m in out for drop in set(DROP.findall(m["text"])))
    first: dict[str, float] = {}
    for m in sorted(out, key=lambda m: m["at"]):
        for drop in DROP.findall(m["text"]):
            first.setdefault(drop, m["at"])
    by = {phone: [m for m in out if m["session"] == phone] for phone in (PHONE, BACKUP)}
    stamps = sorted(m["at"] for m in out)
    figures = {"messages": len(out), "main": len(by[PHONE]), "backup": len(by[BACKUP]),
               "lost": len(set(posted) - set(carried)), "duplicated": sum(c - 1 for c in carried.values()),
               "longest_s": max(first[d] - at for d, at in posted.items() if d in first) * SPEEDUP,
               "peak_main": peak_per_minute([m["at"] * SPEEDUP for m in by[PHONE]]),
               "peak_backup": peak_per_minute([m["at"] * SPEEDUP for m in by[BACKUP]]),
               "drained_s": (stamps[-1] - min(posted.values())) * SPEEDUP}
    if banned_at is not None:
        after = [m for m in by[PHONE] if m["at"] > banned_at]
        figures.update(failover_s=min(m["at"] for m in by[BACKUP]) - banned_at if by[BACKUP] else float("nan"),
                       by_backup=len(acked(by[BACKUP])), waited=len(acked(after)), waited_messages=len(after))
    return figures


def both() -> dict[str, dict[str, float]]:
    """The two runs, one after the other, each in its own directory."""
    results = {}
    for name, ban in (("coalesced", False), ("ban", True)):
        with tempfile.TemporaryDirectory(prefix=f"sending-{name}-") as tmp:
            results[name] = figures(run(Path(tmp), ban))
    return results
