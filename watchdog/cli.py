"""The `wa-watchdog` command: one entry point, one subcommand per process or ops query.

Subcommand modules are imported only when chosen, so a bridge restart does not
pay for the watchdog's imports and vice versa.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
from collections.abc import Callable

from watchdog.components import Config, load
from watchdog.shared.config import ConfigError
from watchdog.shared.data_dir import DataDirError, ensure_writable, user_name
from watchdog.shared.exitcodes import EXIT_CONFIG
from watchdog.shared.file_modes import set_umask, tighten_data_dir

DEFAULT_CONFIG = os.environ.get("WA_WATCHDOG_CONFIG", "conf/demo.toml")  # the demo, from a checkout of the source

# subcommand -> (module, function, help); the function takes (config, args) and returns an exit code.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("watchdog.core.arbiter", "cmd_run", "supervise the whole system (what systemd starts)"),
    "sim": ("bridge.simulator.server", "cmd_sim", "run the simulated WhatsApp service"),
    "bridge": ("bridge.main", "cmd_bridge", "run the bridge of one account"),
    "monitor": ("monitors.main", "cmd_monitor", "run the drop monitor of one or more projects"),
    "status": ("watchdog.control.client", "cmd_status", "show every component of the running watchdog"),
    "restart": ("watchdog.control.client", "cmd_restart", "restart one component"),
    "reload": ("watchdog.control.client", "cmd_reload", "make the running watchdog read its config again"),
    "recoveries": ("watchdog.commands.recoveries", "cmd_recoveries", "show the recovery log"),
    "logs": ("watchdog.commands.logs", "cmd_logs", "show the components' logs merged in time order, or follow them"),
    "drops": ("monitors.ops", "cmd_drops", "list recorded drops"),
    "feedback": ("monitors.ops", "cmd_feedback", "send operator feedback for a recorded drop"),
    "pair": ("bridge.pairing", "cmd_pair", "link an account to a phone (neonize)"),
    "check": ("watchdog.commands.check", "cmd_check", "verify an installation: config, data dir, ports, sessions, unit"),
    "backup": ("watchdog.commands.backup", "cmd_backup", "copy the stores, session and recovery log consistently into DIR"),
    "prune": ("monitors.prune", "cmd_prune", "remove old messages every monitor has read from messages.db"),
    "drops-api": ("monitors.api.main", "cmd_drops_api", "run the drops and feedback API and the event webhooks"),
}
WRITES_DATA_DIR = ("run", "sim", "bridge", "monitor", "pair", "drops-api")  # checked (and created) before they start
SEES_RUNNING = ("status", "recoveries", "logs")  # with the file on disk invalid, they read the running system


class _Version(argparse.Action):
    """`--version`, read from the installed package only when asked (importlib.metadata is not free)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from importlib.metadata import PackageNotFoundError, version
        try:
            found = version("wa-watchdog")
        except PackageNotFoundError:
            found = "unknown (not installed; run from a source tree)"
        print(f"wa-watchdog {found}")
        parser.exit()


def _add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "bridge" or name == "pair":
        parser.add_argument("--account", required=True, help="account name from [accounts.NAME]")
    if name == "bridge":
        parser.add_argument("--standby", action="store_true",
                            help="warm standby: load everything, then wait for the session and take it over")
    if name == "pair":
        parser.add_argument("--phone", help="phone number for a pairing code (else a QR code)")
    if name == "monitor":
        parser.add_argument("--project", required=True, action="append",
                            help="project name from [[projects]] (repeat it: one process for several projects)")
    if name in ("status", "recoveries", "drops"):
        parser.add_argument("--json", action="store_true", help="machine-readable output")
    if name == "restart":
        parser.add_argument("component", help="component name, e.g. bridge:main or monitor:lawley")
    if name == "logs":
        parser.add_argument("component", nargs="*", help="only these components (default: all and the watchdog)")
        parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines as they come")
        parser.add_argument("--lines", "-n", type=int, help="the newest N lines (default 50, 10 with -f)")
    if name in ("recoveries", "drops", "logs"):
        parser.add_argument("--since", help="only newer than this (e.g. 30m, 1h, 2d)")
    if name == "recoveries":
        parser.add_argument("--component", help="only this component (e.g. bridge:main)")
    if name == "drops":
        parser.add_argument("--project", help="only this project")
        parser.add_argument("--backfilled", action="store_true", help="only drops recovered after an outage")
    if name == "check":
        parser.add_argument("--unit-dir", default="/etc/systemd/system", help="where the systemd unit is installed")
    if name == "backup":
        parser.add_argument("dir", help="directory to write the backup into (a new dated folder inside it)")
    if name == "prune":
        parser.add_argument("--older-than", required=True, help="age of what goes, e.g. 180d")
        parser.add_argument("--dry-run", action="store_true", help="count what would go, remove nothing")
    if name == "feedback":
        parser.add_argument("--project", required=True)
        parser.add_argument("drop", help="drop number, e.g. DR1234567")
        parser.add_argument("--message", required=True, help="feedback text, e.g. 'needs correction'")


def _no_config(default: str) -> str:
    """What to do when no --config was given and the default is not there (an installed copy run outside the
    source tree: the demo config is not package data, its data_dir would land in site-packages)."""
    source = "$WA_WATCHDOG_CONFIG" if "WA_WATCHDOG_CONFIG" in os.environ else "the default config"
    return (f"no --config given and {source} {os.path.abspath(default)} does not exist: pass --config FILE or set "
            "WA_WATCHDOG_CONFIG (conf/demo.toml in a checkout of the source is the demo, conf/prod.example.toml "
            "the production example)")


@functools.cache
def build_parser() -> argparse.ArgumentParser:
    """Built once per process (~10 ms: 16 sub-parsers); the fork template builds it for its children."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"config file (default: $WA_WATCHDOG_CONFIG or {DEFAULT_CONFIG})")
    common.add_argument("--data-dir", help="overrides data_dir from the config")
    parser = argparse.ArgumentParser(prog="wa-watchdog", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, _, help_text) in COMMANDS.items():
        _add_arguments(name, sub.add_parser(name, parents=[common], help=help_text, description=help_text))
    return parser


def _config(args: argparse.Namespace) -> Config:
    """The config file's; for SEES_RUNNING commands, if it is invalid, the one the running watchdog loaded."""
    try:
        return load(args.config, args.data_dir)
    except ConfigError as exc:
        if args.command not in SEES_RUNNING:
            raise
        from watchdog.core.last_config import running
        try:
            config = running(Config, args.config, args.data_dir)
        except ConfigError as why:
            raise ConfigError(f"{exc}\n(and the running system cannot be read instead: {why})") from None
        print(f"wa-watchdog {args.command}: warning: the config on disk is invalid: {exc}\n"
              f"showing the system with the configuration the watchdog last loaded ({config.path}, kept in "
              f"{config.data_dir / 'run'})", file=sys.stderr)
        return config


def main(argv: list[str] | None = None) -> int:
    set_umask()  # before anything creates a file: stored messages are not for other local users
    args = build_parser().parse_args(argv)
    module_name, function_name, _ = COMMANDS[args.command]
    try:
        if args.config == DEFAULT_CONFIG and not os.path.exists(DEFAULT_CONFIG):
            raise ConfigError(_no_config(DEFAULT_CONFIG))
        config = _config(args)
        if args.command in WRITES_DATA_DIR:  # created (0750) or refused in one line; ops commands create nothing
            ensure_writable(config.data_dir)
            tighten_data_dir(config.data_dir)
        command: Callable[[Config, argparse.Namespace], int] = getattr(
            importlib.import_module(module_name), function_name)
        return command(config, args)
    except ConfigError as exc:
        print(f"wa-watchdog {args.command}: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except DataDirError as exc:
        print(f"wa-watchdog {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except PermissionError as exc:  # a file this user may not touch: name it, no traceback (restarting won't help)
        print(f"wa-watchdog {args.command}: {exc.strerror or 'permission denied'}: {exc.filename or exc} "
              f"(running as {user_name(os.getuid())})", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
