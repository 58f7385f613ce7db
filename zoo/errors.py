"""Errors the zoo raises for user and environment mistakes; the CLI prints them as one line (exit 2).

Raise one of these where input enters (a CLI argument, a reader, a loader, the Hub), naming the flag, the
file or the repo and saying what was expected and what came. Anything else that escapes a command is a bug
in the zoo and keeps its traceback.

Each kind also derives from the builtin exception a library caller would catch (``ValueError`` for bad
input, ``RuntimeError`` for an unreachable or refusing service), so ``except ValueError`` keeps working.
"""


class ZooError(Exception):
    """Base class: a message meant for the user."""


class InvalidArgumentError(ZooError, ValueError):
    """An argument or setting out of range or of the wrong kind (a CLI flag, a model argument, a config
    field): the message names it, what is allowed and what came."""


class InvalidFileError(ZooError, ValueError):
    """A user's file that is empty, malformed, truncated, too large or contradicts itself (a data file, a
    labels CSV, a config, a manifest): the message names the file and what was expected."""


class UnknownModelError(ZooError, ValueError):
    """An architecture name the zoo does not register."""


class UnknownTagError(ZooError, ValueError):
    """A pretrained tag (``arch.tag``) or preset the zoo does not know."""


class PretrainedUnavailableError(ZooError, RuntimeError):
    """A known tag whose checkpoint is neither shipped, cached nor reachable."""


class CheckpointError(ZooError, ValueError):
    """A checkpoint that is corrupt, unverified, or made for another architecture."""


class HubError(ZooError, RuntimeError):
    """The Hub (or a Hub-protocol server) could not be reached or refused: the message names the repo and
    the HTTP status."""


class PublishError(HubError):
    """An upload to the Hub that failed (offline, no permission, server error)."""


class OutputNotWritableError(ZooError, ValueError):
    """An output path (file or folder) that cannot or must not be written (it is an input, an existing
    checkpoint, inside the shipped ``weights/``): checked before the work starts."""


class MissingFileError(InvalidFileError, FileNotFoundError):
    """A file or folder the user named (or a file of theirs lists) that does not exist: the message names it
    and where it was looked for. Also a ``FileNotFoundError``, as a library caller expects."""
