"""`scripts/bench sending`: a burst of 100 drops in 10 groups from 30 contractors within one minute, acknowledged
through the bridge's paced outbox (bridge/pace.py) with the default pace.

The runs, side by side:
- projected: the pace itself on a virtual clock (the outbox's own order: always the plan's first row, sent when
  due, "typing…" before a text): one acknowledgement per drop as a message and as a reaction, and message
  acknowledgements coalesced per group as the monitor does (the default: until the group is quiet, capped; and
  the fixed windows before it, 3 s and the longest allowed), a group's message still waiting in the outbox joined
  by the group's next ones. Instant, and exactly the default settings over the real 20+ minutes; the default and
  the old 3 s window also over SEEDS other bursts of the same shape (how much the count depends on this one).
- real, bridge alone: the real bridge and simulator, 100 message acknowledgements posted to /api/send (with an
  Idempotency-Key, as the monitors do) within the burst, the bridge killed with SIGKILL half way through the
  drain and started again. The pace is the default one sped up SPEEDUP times (every duration divided, every
  rate multiplied), so the run takes about a minute; its figures are scaled back. What it checks beyond the
  projection: nothing lost or duplicated across the kill, the order per group, the budget held by the real
  timing (/sim/sent times).
- real, through the monitor (sending_system.py): the drops posted as the contractors' messages, message
  acknowledgements coalesced; then the same with the first of two sending numbers banned half way.

Messages sent (WhatsApp messages added to the groups), the longest drop -> acknowledgement gap, and the peak
number of messages in any 60 s (the account's budget is per_minute).
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import fields
from datetime import datetime
from pathlib import Path

from bridge.pace import PaceConfig, Pacer, Queued
from monitors.config import FeedbackConfig
from monitors.feedback import coalesce_due
from scripts.benchmarks.bridge_bench import _start, _stop, _wait
from watchdog.shared import clock, endpoints

DROPS, GROUPS, CONTRACTORS, BURST_S = 100, 10, 30, 60.0
SPEEDUP = 20.0
SEEDS = 100  # other random bursts the coalescing rules are projected over
MAX_MESSAGES = 12  # issue 22's target for the burst's message acknowledgements, coalesced
PHONE = "27710000000"
ACK = "✅ DR{n} recorded, thank you @{contractor}"


def group_jid(n: int) -> str:
    return f"1203630000000{n:05d}@g.us"


def burst(seed: int = 22) -> list[tuple[float, int, str, str]]:
    """(offset s, drop number, group, contractor): 100 drops at random moments within the minute."""
    rng = random.Random(seed)
    contractors = [f"2771{n:07d}" for n in range(1, CONTRACTORS + 1)]
    drops = [(rng.uniform(0, BURST_S), 1734000 + n, group_jid(n % GROUPS + 1), rng.choice(contractors))
             for n in range(DROPS)]
    return sorted(drops)


def peak_per_minute(times: list[float]) -> int:
    return max((sum(1 for t in times if start <= t < start + 60.0) for start in times), default=0)


def handed_over(feedback: FeedbackConfig | None, seed: int = 22) -> list[tuple[float, str, list[float], int]]:
    """The acknowledgements as the monitor hands them to the outbox, (moment, group, the drops' moments it carries,
    text length): each drop's own at its moment (`feedback` None), or a group's coalesced as `feedback` says
    (monitors/feedback.py, `coalesce_due`): held until the group is quiet, at most until the cap, then one message,
    a line per submitter naming their drops."""
    template = FeedbackConfig().template
    groups: dict[str, list[tuple[float, int, str]]] = {}
    for at, n, chat, who in burst(seed):
        groups.setdefault(chat, []).append((at, n, who))
    out = []
    for chat, drops in groups.items():
        while drops:
            carried = drops[:1]
            while feedback is not None and len(carried) < len(drops) and \
                    drops[len(carried)][0] <= coalesce_due([at for at, _, _ in carried], feedback):
                carried = drops[:len(carried) + 1]
            drops = drops[len(carried):]
            lines: dict[str, list[str]] = {}
            for _, n, who in carried:
                lines.setdefault(who, []).append(f"DR{n}")
            text = "\n".join(template.format(number=who, drop=", ".join(numbers)) for who, numbers in lines.items())
            due = coalesce_due([at for at, _, _ in carried], feedback) if feedback is not None else carried[0][0]
            out.append((due, chat, [at for at, _, _ in carried], len(text)))
    return sorted(out)


def project(pace: PaceConfig, reaction: bool, feedback: FeedbackConfig | None = None,
            seed: int = 22) -> dict[str, float]:
    """The outbox's loop on a virtual clock: rows queued when the monitor hands them over, the plan's first sent
    when due. `feedback`: message acknowledgements coalesced as it says (monitors/feedback.py), and joined while
    waiting: a group's message still in the outbox when the next one is handed over is withdrawn and posted again
    carrying both (a new row, at the back of the queue; monitors/store/rejoin.py)."""
    coalescing = feedback is not None and not reaction
    now = [0.0]
    pacer = Pacer(pace, now=lambda: now[0], rng=random.Random(7))
    arrivals = [(at, Queued(i, chat, "", reaction, length), drops)
                for i, (at, chat, drops, length) in enumerate(handed_over(feedback if coalescing else None, seed))]
    carries = {row.seq: drops for _, row, drops in arrivals}  # row -> the drops' moments it acknowledges
    pending: list[Queued] = []
    done: dict[int, float] = {}
    i = 0
    while i < len(arrivals) or pending:
        while i < len(arrivals) and arrivals[i][0] <= now[0]:
            row = arrivals[i][1]
            waiting = next((q for q in pending if q.chat == row.chat), None) if coalescing else None
            if waiting is not None:  # joined: the queued message withdrawn, one message for both posted
                pending.remove(waiting)
                row = Queued(len(carries), row.chat, "", False, waiting.text_len + 1 + row.text_len)
                carries[row.seq] = carries[waiting.seq] + carries[arrivals[i][1].seq]
            pending.append(row)
            i += 1
        first, due = pacer.plan(pending).order[0] if pending else (None, float("inf"))
        if first is not None and due <= now[0]:
            now[0] += 0.0 if reaction else pace.typing_s("x" * first.text_len)
            pacer.record(first.chat, first.reaction)
            done[first.seq] = now[0]
            pending.remove(first)
        else:
            now[0] = min(due, arrivals[i][0] if i < len(arrivals) else float("inf"))
    times = sorted(done.values())
    return {"messages": 0 if reaction else len(done), "sent": len(done),
            "longest_s": max(done[seq] - at for seq in done for at in carries[seq]),
            "peak": peak_per_minute(times), "drained_s": times[-1]}


def sped_up(pace: PaceConfig) -> str:
    """The `pace = {...}` line of `pace` sped up SPEEDUP times."""
    values = []
    for f in fields(pace):
        value = getattr(pace, f.name)
        if isinstance(value, bool):
            values.append(f"{f.name} = {str(value).lower()}")
        elif f.name.startswith("per_") or f.name.endswith("per_minute") or f.name.endswith("per_s"):
            values.append(f"{f.name} = {type(value)(value * SPEEDUP)}")
        else:
            values.append(f"{f.name} = {value / SPEEDUP:g}")
    return "pace = { " + ", ".join(values) + " }"


def config(pace_line: str) -> str:
    groups = "".join(f'\n[[sim.groups]]\njid = "{group_jid(n)}"\nname = "Group {n}"\nparticipants = ["27710000001"]\n'
                     for n in range(1, GROUPS + 1))
    return (f'data_dir = "data"\n[sim]\nport = 0\n{groups}\n[accounts.main]\ntransport = "sim"\nphone = "{PHONE}"\n'
            f'api_port = 0\nsend_wait_s = 0\n{pace_line}\n[[projects]]\nname = "p1"\ngroups = ["{group_jid(1)}"]\n')


def post(url: str, path: str, body: dict | None = None, key: str = "") -> dict:
    request = urllib.request.Request(url + path, method="POST" if body is not None else "GET",
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json",
                                              **({"Idempotency-Key": key} if key else {})})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def connected(url: str) -> bool:
    try:
        return bool(post(url, "/api/health").get("connected"))
    except OSError:  # 503 while connecting, or not listening yet
        return False


def sent(sim: str) -> list[dict]:
    return post(sim, f"/sim/sent?session={PHONE}")  # type: ignore[return-value]


def real(workdir: Path) -> dict[str, float]:
    path = workdir / "wa.toml"
    path.write_text(config(sped_up(PaceConfig())), encoding="utf-8")
    data = workdir / "data"
    started = [_start(path, "sim", log=workdir / "sim.log")]
    try:
        sim = endpoints.wait_url(data, "sim", timeout=20)
        bridge = _start(path, "bridge", "--account", "main", log=workdir / "bridge.log")
        started.append(bridge)
        url = _wait(lambda: endpoints.url(data, "bridge:main"), 30, "the bridge API", 0.01)
        _wait(lambda: connected(url), 30, "the bridge to connect", 0.05)
        posted: dict[str, float] = {}
        start = time.monotonic()
        for at, n, chat, who in burst():
            time.sleep(max(0.0, start + at / SPEEDUP - time.monotonic()))
            text = ACK.format(n=n, contractor=who)
            post(url, "/api/send", {"recipient": chat, "message": text, "mentions": [who]}, key=f"ack-DR{n}")
            posted[text] = clock.now_s()
        _wait(lambda: len(sent(sim)) >= DROPS // 2, 300, "half the acknowledgements sent", 0.05)
        bridge.send_signal(signal.SIGKILL)  # in the middle of the drain
        bridge.wait()
        bridge = _start(path, "bridge", "--account", "main", log=workdir / "bridge.log")
        started.append(bridge)
        out = _wait(lambda: s if len(s := sent(sim)) >= DROPS else None, 600, "every acknowledgement sent", 0.1)
        time.sleep(2.0)  # anything sent twice would arrive now
        out = sent(sim)
    finally:
        for proc in reversed(started):
            _stop(proc)
    texts = Counter(m["text"].split("recorded")[0] for m in out)
    times = {m["text"].split("recorded")[0]: datetime.fromisoformat(m["time"]).timestamp() for m in out}
    gaps = [times[text.split("recorded")[0]] - at for text, at in posted.items()]
    stamps = sorted(times.values())
    per_group = {chat: [m["text"] for m in out if m["recipient"] == chat] for chat in {m["recipient"] for m in out}}
    in_order = all(texts_of == sorted(texts_of, key=lambda t: list(posted).index(t))
                   for texts_of in per_group.values() if all(t in posted for t in texts_of))
    return {"messages": len(out), "distinct": len(texts), "duplicates": sum(c - 1 for c in texts.values()),
            "longest_s": max(gaps) * SPEEDUP, "peak": peak_per_minute([t * SPEEDUP for t in stamps]),
            "drained_s": (stamps[-1] - min(posted.values())) * SPEEDUP, "in_order": float(in_order)}


def main(argv: list[str]) -> int:
    from scripts.benchmarks import sending_system  # it imports this module
    parser = argparse.ArgumentParser(prog="scripts/bench sending", description=__doc__.splitlines()[0])
    parser.add_argument("--projected-only", action="store_true", help="skip the real runs")
    args = parser.parse_args(argv)
    pace, default = PaceConfig(), FeedbackConfig()
    window = f"quiet {default.coalesce_s:g} s, at most {default.coalesce_max_s:g} s"
    rules = {f"message, coalesced (the default: {window})": default,
             "message, coalesced (before: a fixed 3 s window)": FeedbackConfig(coalesce_s=3.0, coalesce_max_s=3.0),
             "message, coalesced (a fixed 60 s window, the longest allowed)": FeedbackConfig(coalesce_s=60.0,
                                                                                           coalesce_max_s=60.0)}
    print(f"default pace: {pace}\ndefault coalescing: {window}\n")
    print("| run | acks as | WhatsApp messages sent | longest drop -> ack | peak messages / 60 s (budget) | drained after |")
    print("|---|---|---|---|---|---|")
    for how, reaction, feedback in (("message", False, None), ("reaction", True, None),
                                    *((how, False, rule) for how, rule in rules.items())):
        r = project(pace, reaction, feedback)
        print(f"| projected | {how} | {r['messages']:.0f} ({r['sent']:.0f} sends) | {r['longest_s']:.0f} s | "
              f"{r['peak'] if not reaction else 0:.0f} ({pace.per_minute}) | {r['drained_s']:.0f} s |")
    for how, rule in list(rules.items())[:2]:
        runs = [project(pace, False, rule, seed) for seed in range(SEEDS)]
        counts = sorted(r["messages"] for r in runs)
        print(f"\nprojected over {SEEDS} other bursts (seeds 0-{SEEDS - 1}), {how}: messages {counts[0]:.0f}-"
              f"{counts[-1]:.0f} (mean {sum(counts) / SEEDS:.1f}; more than 12 in {sum(c > 12 for c in counts)}); "
              f"longest drop -> ack up to {max(r['longest_s'] for r in runs):.0f} s")
    if args.projected_only:
        return 0
    with tempfile.TemporaryDirectory(prefix="sending-bench-") as tmp:
        r = real(Path(tmp))
    print(f"| real, x{SPEEDUP:g} pace, bridge alone, SIGKILL half way | message | {r['messages']:.0f} "
          f"({r['distinct']:.0f} distinct, {r['duplicates']:.0f} duplicated) | {r['longest_s']:.0f} s | "
          f"{r['peak']:.0f} ({pace.per_minute}) | {r['drained_s']:.0f} s |")
    runs = sending_system.both()
    c, b = runs["coalesced"], runs["ban"]
    print(f"| real, x{SPEEDUP:g} pace and coalescing, through the monitor | message, coalesced ({window}) | "
          f"{c['messages']:.0f} ({c['lost']:.0f} drops unacknowledged, {c['duplicated']:.0f} twice) | "
          f"{c['longest_s']:.0f} s | {c['peak_main']:.0f} ({pace.per_minute}) | {c['drained_s']:.0f} s |")
    print(f"| real, x{SPEEDUP:g}, main banned half way, send_accounts = [main, backup] | message, coalesced "
          f"({window}) | {b['messages']:.0f}: main {b['main']:.0f}, backup {b['backup']:.0f} ({b['lost']:.0f} "
          f"drops unacknowledged, {b['duplicated']:.0f} twice) | {b['longest_s']:.0f} s | main {b['peak_main']:.0f}, "
          f"backup {b['peak_backup']:.0f} ({pace.per_minute} each) | {b['drained_s']:.0f} s |")
    print(f"\nbridge alone: each group's acknowledgements in drop order: {'yes' if r['in_order'] else 'NO'}")
    print(f"ban ({sending_system.BAN_S} s real = {sending_system.BAN_S * SPEEDUP / 60:g} min of the default pace): "
          f"failover {b['failover_s']:.2f} s from main's bridge seeing it to the backup's first acknowledgement "
          f"(not scaled); {b['by_backup']:.0f} drops acknowledged by the backup; {b['waited']:.0f} drops in "
          f"{b['waited_messages']:.0f} messages already in main's outbox waited out the ban and went from main "
          f"after it")
    ok = (r["messages"] == DROPS and r["duplicates"] == 0 and r["in_order"] and r["peak"] <= pace.per_minute
          and all(x["lost"] == 0 and x["duplicated"] == 0 for x in runs.values())
          and max(c["peak_main"], b["peak_main"], b["peak_backup"]) <= pace.per_minute
          and c["messages"] <= MAX_MESSAGES)
    return 0 if ok else 1
