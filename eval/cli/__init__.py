"""``tdbn-zoo``: the command line. User errors print one clear line (exit 2), never a traceback.

Start-up stays light: ``tdbn-zoo --help`` and argument errors import neither torch nor timm. The command
modules import only the standard library at module level and in ``add_arguments``; their heavy imports
live in ``run()``, and only the chosen command's arguments are built (tests/test_cli_startup.py).
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
    """Run ``fn()`` as a command: user errors become one line naming the problem (exit 2), not a traceback;
    set TDBN_ZOO_DEBUG=1 for the traceback.

    User errors are the zoo's own (``ZooError``, and ``ValueError``/``TypeError``/``FileNotFoundError`` raised
    by argument checks), plus, as a last resort for what the readers and loaders do not convert at their
    boundary, the classes in ``user_error_message``. Anything else is a bug and keeps its traceback.
    """
    import os

    try:
        return int(fn() or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        message = user_error_message(e)
        if message is None or os.environ.get("TDBN_ZOO_DEBUG"):
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2


# Exceptions from these libraries come from the user's files, network or Hub repo (a corrupt .safetensors, an
# unreadable HDF5/event file, a Hub that is offline or refuses): matched by module so none is imported here.
_USER_ERROR_MODULES = ("safetensors", "huggingface_hub", "httpx", "httpx2", "requests", "h5py", "tonic",
                       "aedat", "faery", "expelliarmus", "nir")
# torch RuntimeErrors caused by the user's checkpoint or sizes, not by the zoo's code
_TORCH_USER_ERRORS = ("Error(s) in loading state_dict", "size mismatch for", "out of memory",
                      "can't allocate memory", "Torch not compiled with CUDA", "invalid device ordinal",
                      "Found no NVIDIA driver", "device type at start of device string")


def user_error_message(e: BaseException) -> str | None:
    """One line describing ``e`` if it is a user or environment error, else ``None`` (a bug: keep the
    traceback)."""
    import zipfile
    import zlib

    from zoo.errors import ZooError

    kind = None
    if isinstance(e, (ZooError, ValueError, TypeError, FileNotFoundError)):
        text = str(e)
    elif isinstance(e, OSError):  # read-only folder, disk full, file too large, permission denied, network
        kind = "I/O error"
        text = f"{e.strerror}: {e.filename}" if e.strerror and e.filename else str(e)
        if e.filename2:
            text += f" -> {e.filename2}"
    elif isinstance(e, (zlib.error, zipfile.BadZipFile, EOFError)):
        kind, text = "corrupt or truncated file", str(e)
    elif isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and any(p in str(e) for p in _TORCH_USER_ERRORS)):
        kind, text = "", str(e)
        if "memory" in text.lower() or isinstance(e, MemoryError):
            kind = "out of memory (try a smaller batch, input size or width)"
    elif any(c.__module__.split(".")[0] in _USER_ERROR_MODULES for c in type(e).__mro__ if c is not Exception):
        kind, text = type(e).__name__, str(e)
    else:
        return None
    text = " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(e).__name__
    head, *more = text.split(" size mismatch for ")  # torch lists every mismatched tensor: the first says it
    if more:
        text = f"{head} size mismatch for {more[0]}" + (f" (and {len(more) - 1} more)" if len(more) > 1 else "")
    if len(text) > 1000:
        text = text[:1000] + " ..."
    return f"{kind}: {text}" if kind else text

