"""Outcome classes for the table-driven bad-input cases of every test folder.

A bad input has exactly two acceptable outcomes:

- a **user error**: on the CLI exit code 2 and one line on stderr, ``tdbn-zoo <command>: error: ...``, that
  names what was expected and what came (never a traceback); in Python a ``ZooError``/``ValueError``/
  ``TypeError``/``FileNotFoundError`` (or a subclass) whose message names the same;
- the **correct result**, checked against an independent expectation by the case itself.

Everything else (a traceback, any other exception type, exit code 0 on a bad input, a hang) fails the case.
"""
from __future__ import annotations

import dataclasses
import re

import pytest

from eval.cli import main

USER_ERRORS = (ValueError, TypeError, FileNotFoundError)


@dataclasses.dataclass
class CliResult:
    rc: int
    out: str
    err: str


def run_cli(argv: list[str], capsys) -> CliResult:
    """Run ``tdbn-zoo *argv`` in-process and capture its streams (``TDBN_ZOO_DEBUG`` must be unset)."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse: exit 2 with its usage line
        rc = int(e.code or 0)
    captured = capsys.readouterr()
    return CliResult(rc, captured.out, captured.err)


def assert_cli_user_error(result: CliResult, *needles: str) -> None:
    """Exit 2, one error line (argparse may print its usage line before it), no traceback, and every
    ``needle`` (case-insensitive regex) found in that line."""
    assert "Traceback" not in result.err, result.err
    assert result.rc == 2, f"expected exit 2, got {result.rc}; stderr: {result.err!r}"
    lines = [ln for ln in result.err.strip().splitlines() if ln.strip() and not ln.startswith(("usage:", " "))]
    assert len(lines) == 1, f"expected one error line, got {lines!r}"
    line = lines[0]
    assert ": error: " in line, line
    for needle in needles:
        assert re.search(needle, line, re.IGNORECASE), f"{needle!r} not in {line!r}"


def assert_user_error(fn, *needles: str, types=USER_ERRORS) -> BaseException:
    """``fn()`` raises a user error whose message matches every ``needle`` (case-insensitive regex)."""
    from zoo.errors import ZooError

    with pytest.raises((ZooError, *types)) as info:
        fn()
    message = str(info.value)
    for needle in needles:
        assert re.search(needle, message, re.IGNORECASE), f"{needle!r} not in {message!r}"
    return info.value


def tree_digest(*folders) -> dict[str, str]:
    """``{path: sha256 of its bytes}`` of every file under ``folders`` (symlinks as ``'-> target'``): equal
    before and after a refused command means nothing on disk changed."""
    import hashlib
    import os
    from pathlib import Path

    out = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            for name in dirs + files:
                path = Path(root) / name
                if path.is_symlink():
                    out[str(path)] = "-> " + os.readlink(path)
                elif path.is_file():
                    out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
                else:
                    out[str(path)] = "dir"
    return out
