"""``tdbn-zoo``: the command line. User errors print one clear line (exit 2), never a traceback."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module in eval.commands (each: HELP, add_arguments(parser), run(args) -> int)
COMMANDS = {
    "demo": "demo",
    "eval": "evaluate",
    "bench": "bench",
    "train": "train",
    "finetune": "finetune",
    "make-events": "make_events",
    "publish": "publish",
    "export-nir": "export_nir",
    "manifest": "manifest",
    "reproduce": "reproduce",
}


def _available() -> dict:
    mods = {}
    for name, module in COMMANDS.items():
        try:
            mods[name] = importlib.import_module(f"eval.commands.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"eval.commands.{module}":
                raise
    return mods


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(prog="tdbn-zoo", description="Directly-trained spiking ResNets with tdBN.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    mods = _available()
    for name, mod in mods.items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
    return parser, mods


def main(argv: list[str] | None = None) -> int:
    parser, mods = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    return report_user_errors(f"tdbn-zoo {args.command}", lambda: mods[args.command].run(args))


def report_user_errors(prog: str, fn) -> int:
    """Run ``fn()`` as a command: user errors become one line naming the problem (exit 2), not a traceback;
    set TDBN_ZOO_DEBUG=1 for the traceback."""
    from zoo.errors import ZooError

    try:
        return int(fn() or 0)
    except (ZooError, ValueError, TypeError, FileNotFoundError) as e:
        import os
        if os.environ.get("TDBN_ZOO_DEBUG"):
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
