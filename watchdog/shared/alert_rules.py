"""The alert rules: each registered by whoever defines it, with what it means and what to do first.

Why a registry, not one list: the supervision core knows its own rules (a crash
loop, a hang, a configuration refused, an exit asking for a person, an upstream
outage), the bridge and the drops domain know theirs (a program's hooks say
which of its words stand for the core's: watchdog/core/hooks.py), and a program's health hook may report a word no one registered. Each
package registers its rules at import (bridge/alert_rules.py,
monitors/alert_rules.py; each package's config checks `load` them), `[[alerts]] rules`
are checked against what is registered, and a word not registered is shown and
logged, never an error (watchdog/shared/alerts.py). Kept free of imports: every child
process loads the configuration.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

RUNBOOK = "docs/OPERATIONS.md"  # not installed with the package: named, as the CLI names it, not linked


@dataclass(frozen=True)
class AlertRule:
    name: str
    title: str  # what it means to the person reading the alert (chat messages, the console)
    action: str  # what to do first (the console); the runbook's row (`runbook_ref`) says the rest
    lasting: bool = False  # fired with how long it has lasted: sent only past an entry's `disconnect_threshold`


_RULES: dict[str, AlertRule] = {}


def register(name: str, title: str, action: str, lasting: bool = False) -> str:
    """Register a rule (once: a second definition of a name is a programming error); returns its name."""
    if name in _RULES:
        raise ValueError(f"alert rule {name!r} is registered twice")
    _RULES[name] = AlertRule(name, title, action, lasting)
    return name


def load(module: str) -> None:
    """Register a package's rules: its module of them registers each at import. Called by the package's
    config checks, so `[[alerts]] rules` know them in every process that reads the config."""
    importlib.import_module(module)


def known() -> tuple[str, ...]:
    """The names of every registered rule, in the order registered."""
    return tuple(_RULES)


def get(name: str) -> AlertRule | None:
    """The registered rule of that name; None for a word no one registered."""
    return _RULES.get(name)


def title(name: str) -> str:
    """A rule's title, or the word itself (underscores as spaces) for one no one registered."""
    rule = _RULES.get(name)
    return rule.title if rule else name.replace("_", " ")


def lasting(name: str) -> bool:
    """True for a rule sent only once it has lasted an entry's threshold (an outage, fired with its duration)."""
    rule = _RULES.get(name)
    return rule is not None and rule.lasting


def runbook_ref(name: str) -> str:
    """Where the runbook explains a rule: the anchor of its row in docs/OPERATIONS.md's alerts table."""
    return f"{RUNBOOK}#alert-{name.replace('_', '-')}"


# The supervision core's own rules: what any supervised program can come to.
CRASH_LOOP = register(
    "crash_loop", "crash loop",
    "read the component's last traceback (`wa-watchdog logs COMPONENT`) and its exit causes "
    "(`wa-watchdog recoveries --component COMPONENT`): a full disk, a corrupt store or a bad deploy "
    "are the usual reasons")
HANG = register(
    "hang", "hung process restarted",
    "usually nothing: it was restarted (resolved follows when healthy); if it repeats, read its log around "
    "the time and check the machine's load")
CONFIG_FAILED = register(
    "config_failed", "failed on its configuration: not restarted",
    "its log (`wa-watchdog logs COMPONENT`) names the key: fix the config, then `systemctl restart wa-watchdog`")
NEEDS_OPERATOR = register(
    "needs_operator", "exited asking for a person: not restarted",
    "its log (`wa-watchdog logs COMPONENT`) says what it needs; once done, `wa-watchdog restart COMPONENT`")
OUTAGE = register(
    "outage", "what it depends on is away: not restarted",
    "the component is up and says its upstream is unreachable (`wa-watchdog status` shows its condition); "
    "check that upstream and the network to it", lasting=True)
