"""The one library error: user mistakes that growres detects up front."""

__all__ = ["GrowresError"]


class GrowresError(ValueError):
    """A user-facing error: bad arguments, an unsupported model, missing data.

    It subclasses ``ValueError`` so callers that catch argument errors generically still see it;
    the CLI turns it into one line on stderr and a non-zero exit.
    """
