"""The `wa-watchdog` command: one entry point, one subcommand per process or ops query.

Each package declares its own subcommands (its `component.py`, composed in
watchdog/components.py); their modules are imported only when chosen, so a
bridge restart does not pay for the watchdog's imports and vice versa.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable

from watchdog.components import Config, commands, load
from watchdog.shared.component import Command, resolve
from watchdog.shared.config import ConfigError
from watchdog.shared.data_dir import DataDirError, ensure_writable, user_name
from watchdog.shared.exitcodes import EXIT_CONFIG
from watchdog.shared.file_modes import set_umask, tighten_data_dir

DEFAULT_CONFIG = os.environ.get("WA_WATCHDOG_CONFIG", "conf/demo.toml")  # the demo, from a checkout of the source

COMMANDS: dict[str, Command] = commands()  # each package declares its own (watchdog/components.py)


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
    for command in COMMANDS.values():
        command.arguments(sub.add_parser(command.name, parents=[common], help=command.help, description=command.help))
    return parser


def _config(args: argparse.Namespace) -> Config:
    """The config file's; for a command that sees the running system, if it is invalid, the one the running
    watchdog loaded."""
    try:
        return load(args.config, args.data_dir)
    except ConfigError as exc:
        if not COMMANDS[args.command].sees_running:
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
    chosen = COMMANDS[args.command]
    try:
        if args.config == DEFAULT_CONFIG and not os.path.exists(DEFAULT_CONFIG):
            raise ConfigError(_no_config(DEFAULT_CONFIG))
        config = _config(args)
        if chosen.writes_data_dir:  # created (0750) or refused in one line; ops commands create nothing
            ensure_writable(config.data_dir)
            tighten_data_dir(config.data_dir)
        handler: Callable[[Config, argparse.Namespace], int] = resolve(chosen.handler)
        return handler(config, args)
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
