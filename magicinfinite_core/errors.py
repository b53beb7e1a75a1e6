"""One exception family, so the CLI and the nodes can show a single actionable line."""


class MagicInfiniteError(ValueError):
    """A problem with user input or files; the message says what to do about it."""


class InputError(MagicInfiniteError):
    """A node or command input that cannot be used as given (the ComfyUI nodes' NodeInputError)."""


class CheckpointError(MagicInfiniteError):
    """A weight file that is missing, truncated, or does not fit the model."""


class AudioError(MagicInfiniteError):
    """Audio that cannot be read or used."""


class MaskError(MagicInfiniteError):
    """Face or speaker masks that cannot be built or do not fit."""


class NonFiniteError(MagicInfiniteError):
    """A prediction or the latent became NaN/inf: the run stops instead of writing a garbage video."""


def finite_error(name: str, value: object, lo: float | None = None, hi: float | None = None) -> str | None:
    """Error text when ``value`` is not a finite number in [lo, hi] (else None).

    Why: NaN compares False against every bound, so plain ``min``/``max`` checks (ComfyUI's, argparse's)
    let it through and the sampler then makes an all-black video; every float input goes through here.
    """
    import math

    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return f"{name} must be a number, got {value!r}"
    if not math.isfinite(v):
        return f"{name} must be a finite number, got {value!r}"
    if lo is not None and v < lo:
        return f"{name} must be at least {lo:g}, got {v:g}"
    if hi is not None and v > hi:
        return f"{name} must be at most {hi:g}, got {v:g}"
    return None
