"""``tdbn-zoo``: the command line. User errors print one clear line (exit 2), never a traceback.

Start-up stays light: ``tdbn-zoo --help`` and argument errors import neither torch nor timm. The command
modules import only the standard library at module level and in ``add_arguments``; their heavy imports
live in ``run()``, and only the chosen command's arguments are built (tests/cli/test_cli_startup.py).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module in eval.cli.commands (each: HELP, add_arguments(parser), run(args) -> int)
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
    "ship": "ship",
    "models": "models",
    "results": "results",
    "compare-runs": "compare_runs",
    "make-subset": "make_subset",
    "synops": "synops",
    "neurobench": "neurobench",
}


def _available() -> dict:
    mods = {}
    for name, module in COMMANDS.items():
        try:
            mods[name] = importlib.import_module(f"eval.cli.commands.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"eval.cli.commands.{module}":
                raise
    return mods


def build_parser(only: str | None = None) -> tuple[argparse.ArgumentParser, dict]:
    """The ``tdbn-zoo`` parser and its command modules. ``only``: fill in the arguments of that command
    alone (the others are listed with their help line), as ``main`` does for the command it runs."""
    parser = argparse.ArgumentParser(prog="tdbn-zoo", description="Directly-trained spiking ResNets with tdBN.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    mods = _available()
    for name, mod in mods.items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        if only is None or name == only:
            mod.add_arguments(p)
    return parser, mods


def _command_in(argv: list[str]) -> str:
    """The subcommand named in ``argv`` (the first word that is one), or ``''``."""
    return next((a for a in argv if a in COMMANDS), "")


def main(argv: list[str] | None = None) -> int:
    """Run ``tdbn-zoo`` with ``argv`` (default: the process arguments); returns the exit code (0 ok, 2 a
    user error printed as one line, never a traceback). Only the chosen command's module is imported."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, mods = build_parser(only=_command_in(argv))
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    return report_user_errors(f"tdbn-zoo {args.command}", lambda: mods[args.command].run(args))


def report_user_errors(prog: str, fn) -> int:
    """Run ``fn()`` as a command: user and environment errors become one line naming the problem (exit 2),
    not a traceback; set TDBN_ZOO_DEBUG=1 for the traceback.

    Classified by type only (``user_error_message``): the zoo's errors (``zoo.errors.ZooError``: readers,
    loaders, the Hub and argument checks raise them where input enters, wrapping the library's exception
    with the file or repo named), the environment's ``OSError`` that names a file (permission denied, disk
    full, a missing file) and running out of memory. Anything else is a bug in the zoo and keeps its
    traceback.
    """
    try:
        return int(fn() or 0)
    except KeyboardInterrupt as e:  # Ctrl-C, or a training run stopped by a signal after keeping its checkpoint
        if not getattr(e, "reported", False):
            print(f"{prog}: interrupted", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    except Exception as e:
        message = user_error_message(e)
        if message is None:
            raise
        from adapters import settings  # imports torch: only once a command has failed

        if settings.get("TDBN_ZOO_DEBUG"):
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2


def _is_instance(e: BaseException, module: str, name: str) -> bool:
    """``isinstance(e, module.name)`` without importing ``module`` (not imported: ``e`` cannot be one)."""
    cls = getattr(sys.modules.get(module), name, None)
    return cls is not None and isinstance(e, cls)


def user_error_message(e: BaseException) -> str | None:
    """One line describing ``e`` if it is a user or environment error, else ``None`` (a bug: keep the
    traceback). By type: a ``ZooError``; an ``OSError`` naming a file (``filename``); ``MemoryError`` or
    torch's ``OutOfMemoryError``."""
    kind = None
    if _is_instance(e, "zoo.errors", "ZooError"):
        text = str(e)
    elif isinstance(e, OSError) and e.filename is not None:  # read-only, disk full, permission, missing file
        kind = "I/O error"
        text = f"{e.strerror}: {e.filename}" if e.strerror else str(e)
        if e.filename2:
            text += f" -> {e.filename2}"
    elif isinstance(e, MemoryError) or _is_instance(e, "torch", "OutOfMemoryError"):
        kind, text = "out of memory (try a smaller batch, input size or width)", str(e)
    else:
        return None
    text = " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(e).__name__
    if len(text) > 1000:
        text = text[:1000] + " ..."
    return f"{kind}: {text}" if kind else text
