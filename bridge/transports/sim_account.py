"""The simulator transport's KIND (bridge/transports/__init__.py), apart from the transport (sim.py) so that
reading a config, `check` and `backup` never import aiohttp's client: a simulated account has no session to
pair or back up (the simulator's state is its own), and its module is preloaded, so its bridge may be forked.
"""
from __future__ import annotations

from bridge.transports import TransportKind

KIND = TransportKind("bridge.transports.sim:SimTransport", forkable=True)
