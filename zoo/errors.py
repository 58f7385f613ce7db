"""Errors the zoo raises for user mistakes; the CLI prints them without a traceback."""


class ZooError(Exception):
    """Base class: a message meant for the user."""


class UnknownModelError(ZooError, ValueError):
    """An architecture name the zoo does not register."""


class UnknownTagError(ZooError, ValueError):
    """A pretrained tag (``arch.tag``) or preset the zoo does not know."""


class PretrainedUnavailableError(ZooError, RuntimeError):
    """A known tag whose checkpoint is neither shipped, cached nor reachable."""


class CheckpointError(ZooError, ValueError):
    """A checkpoint that is corrupt, unverified, or made for another architecture."""


class PublishError(ZooError, RuntimeError):
    """An upload to the Hub that failed (offline, no permission, server error)."""


class OutputNotWritableError(ZooError, ValueError):
    """An output path (file or folder) that cannot be written: checked before the work starts."""
