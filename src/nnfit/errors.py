"""The project's own error type: every problem with user input surfaces as one of these.

The CLI turns an :class:`NnfitError` into a one-line message and exit status 2; the Python API
lets it propagate so callers can catch it. Anything else escaping is a bug in nnfit.
"""

from __future__ import annotations


class NnfitError(Exception):
    """A problem with user input (data, arguments, config, checkpoints), stated in one line.

    Args:
        message: what is wrong, naming the file, column, key or value at fault.

    Example:
        >>> raise NnfitError("data.csv: column 'age' not found")  # doctest: +SKIP
    """

    exit_code = 2

    def __init__(self, *args: object) -> None:
        # Messages name files, columns and labels taken from user data: made printable here,
        # so no caller can put a raw ESC or newline on the user's terminal.
        super().__init__(*(printable(a) if isinstance(a, str) else a for a in args))


class ConfigError(NnfitError, ValueError):
    """An unknown key, a wrong type or an invalid value in a config, a flag or an argument."""


class DataError(NnfitError, ValueError):
    """Malformed or unusable data: missing file or column, non-numeric feature, bad labels."""


class CheckpointError(NnfitError):
    """A run directory, weights file or checkpoint that cannot be read or does not fit the model."""


class TrainingError(NnfitError):
    """Training cannot go on: a loss, gradient or parameter went NaN or infinite."""

    exit_code = 1


class Stopped(NnfitError):
    """Training was stopped by a signal after committing a checkpoint.

    Attributes:
        exit_code: 128 + the signal number (130 for SIGINT, 143 for SIGTERM), the shell's
            convention for a process ended by that signal.
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class NnfitWarning(UserWarning):
    """Something was recovered from or ignored, e.g. a damaged checkpoint skipped on resume."""


def warn(message: str) -> None:
    """Issue an :class:`NnfitWarning` (the CLI prints it as one ``nnfit: warning:`` line)."""
    import warnings

    warnings.warn(printable(message), NnfitWarning, stacklevel=2)


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: object) -> str:
    """``text`` with every character a terminal could act on written as a Python escape.

    Control characters (ESC, newline, carriage return, backspace ...), invisible format
    characters such as bidirectional overrides, and line separators become ``\\x1b``,
    ``\\n``, ``\\u202e`` and so on, as :func:`repr` writes them; letters of any script stay.
    :class:`NnfitError` and :func:`warn` apply it to every message, and the CLI to every line
    it prints to stderr, so a name from user data (a column, a file, a label) cannot recolour
    the terminal or add a line.

    Args:
        text: a name or a whole message (any object; ``str()`` is taken).

    Returns:
        One line of printable text.

    Example:
        >>> printable("a\\x1b[31mb\\nc")
        'a\\\\x1b[31mb\\\\nc'
    """
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else _ESCAPES.get(c) or _escape(ord(c)) for c in s)


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
