"""The extension point: what one kind of program adds to generic supervision (as circus's hooks and plugins).

A program names its hooks as `"module:attribute"` (the bridge's built-in
program names `bridge.supervision:hooks`); the core calls them and never asks
what kind of program it runs. Every hook has a neutral default, so a program
without hooks is supervised by its declared checks alone.
"""
from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping

from watchdog.core.probes import Classifier, HealthResult, expect_status
from watchdog.core.restart_policy import EXIT_RULES, ExitRule
from watchdog.shared import alert_rules
from watchdog.shared.programs import Check, Program


class Hooks:
    """The default hooks: an HTTP check passes on its expected status; no warm standby; the core's own alert words.

    The alert words are the program's names for what the core sees: the rule an upstream outage fires
    (`outage_rule`, fired with its duration, resolved by an OK answer) and the rule and meaning of each
    no-restart exit code (`exit_rules`; a code not named fires `config_failed`)."""

    outage_rule: str = alert_rules.OUTAGE
    exit_rules: Mapping[int, ExitRule] = EXIT_RULES

    def classifier(self, check: Check) -> Classifier:
        """How to read an HTTP check's answer (status, body) -> HealthResult."""
        return expect_status(check.status)

    def status_fields(self, last_probe: HealthResult | None) -> dict:
        """Extra keys for this program's `GET /status` item, from its last probe answer (None: none yet)."""
        return {}

    def gauges(self, last_probe: HealthResult | None) -> dict[str, tuple[str, float]]:
        """This program's own gauges for /metrics from its last probe answer: name -> (help, value), exported
        as `wa_watchdog_<name>{component=...}` (watchdog/core/metrics.py)."""
        return {}

    def standby_argv(self, program: Program) -> tuple[str, ...]:
        """The command of a warm standby: a second instance that loads everything, then waits to take over
        (holding nothing until then). () = this kind of program has none."""
        return ()


DEFAULT = Hooks()


@functools.cache
def load(spec: str) -> Hooks:
    """The Hooks object named `module:attribute` ("" = the defaults); ImportError/AttributeError if missing."""
    if not spec:
        return DEFAULT
    module, _, attribute = spec.partition(":")
    hooks = getattr(importlib.import_module(module), attribute)
    if not isinstance(hooks, Hooks):
        raise TypeError(f"{spec} is not a watchdog.core.hooks.Hooks")
    return hooks
