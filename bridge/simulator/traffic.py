"""Demo traffic: contractors posting drop numbers, so a demo shows the system working.

Realistic enough to exercise the monitors: mostly `DR` + 7 digits, some 6 or
8 digits, some chatter without a drop, some resubmissions of an earlier number.
"""
from __future__ import annotations

import asyncio
import random

from loguru import logger

from bridge.simulator.state import SimState

TEMPLATES = (
    "{drop} installed, pics attached",
    "{drop} done",
    "Pole {drop} completed, ONT tested",
    "{drop} connected and signal ok",
    "Resubmitting {drop} with the missing photos",
)
CHATTER = ("Morning team", "On site now", "Waiting for the splicer", "Rain stopping work for an hour")
FALLBACK_SENDERS = ("27710000101", "27710000102", "27710000103")


def drop_number(rng: random.Random) -> str:
    digits = rng.choices((7, 6, 8), weights=(8, 1, 1))[0]
    return "DR" + "".join(rng.choice("0123456789") for _ in range(digits))


def demo_text(rng: random.Random, earlier: list[str]) -> str:
    """One contractor message; records new drop numbers in `earlier` for later resubmissions."""
    roll = rng.random()
    if roll < 0.15:
        return rng.choice(CHATTER)
    if roll < 0.25 and earlier:
        return TEMPLATES[-1].format(drop=rng.choice(earlier))
    drop = drop_number(rng)
    earlier.append(drop)
    del earlier[:-50]
    return rng.choice(TEMPLATES[:-1]).format(drop=drop)


async def run_traffic(state: SimState, interval: float, rng: random.Random | None = None) -> None:
    """Post one demo message into a random group every `interval` seconds, forever."""
    rng = rng or random.Random()
    earlier: list[str] = []
    groups = list(state.groups.values())
    if not groups:
        logger.warning("traffic enabled but no [[sim.groups]] configured: nothing to post")
        return
    while True:
        await asyncio.sleep(interval)
        group = rng.choice(groups)
        sender = rng.choice(group.participants or FALLBACK_SENDERS)
        message = state.post(group, f"{sender}@s.whatsapp.net", demo_text(rng, earlier))
        logger.debug("traffic {} in {}: {}", message.id, group.name, message.text)
