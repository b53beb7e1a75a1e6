"""One exception family, so the CLI and the nodes can show a single actionable line."""


class MagicInfiniteError(ValueError):
    """A problem with user input or files; the message says what to do about it."""


class CheckpointError(MagicInfiniteError):
    """A weight file that is missing, truncated, or does not fit the model."""


class AudioError(MagicInfiniteError):
    """Audio that cannot be read or used."""


class MaskError(MagicInfiniteError):
    """Face or speaker masks that cannot be built or do not fit."""
