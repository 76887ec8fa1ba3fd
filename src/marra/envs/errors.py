"""The error of the environment layer (kept free of torch so the registry imports fast)."""

__all__ = ["EnvError", "EnvStateError"]


class EnvError(ValueError):
    """A bad environment argument or a call that breaks the contract; the message names it."""


class EnvStateError(EnvError, RuntimeError):
    """A call in the wrong state: ``step`` before ``reset``, or on a copy whose episode ended."""
