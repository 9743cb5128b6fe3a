"""Scratch transport for the recipe check."""
from __future__ import annotations

from bridge.transports import TransportKind
from bridge.transports.sim import SimTransport


class EchoTransport(SimTransport):
    pass


KIND = TransportKind("bridge.transports.echo:EchoTransport")
