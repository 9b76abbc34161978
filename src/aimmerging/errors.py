"""Errors that the command line reports as one line and exit code 2."""


class AimmergingError(Exception):
    """Base class of user-facing errors: the message is printed as is, no traceback."""


class DataError(AimmergingError):
    """A data file or record is unreadable or malformed.

    The message names the file and, where there is one, the record index and field.
    """


class ConfigError(AimmergingError):
    """A configuration value is unknown, of the wrong type or out of range."""


class TrainingError(AimmergingError):
    """Training cannot go on (for example a NaN or infinite loss)."""


def missing_folder(path) -> str:
    """``PATH`` for an error about a folder that is not there, with the current folder when
    ``PATH`` is relative (relative paths count from where the command runs, not the config)."""
    import os

    text = str(path)
    return text if os.path.isabs(text) else f"{text} (relative to {os.getcwd()})"


def did_you_mean(word, choices) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to a mistyped ``word`` (difflib's
    ratio at least 0.6), or an empty string when none is close."""
    import difflib

    if not isinstance(word, str):
        return ""
    by_lower = {str(c).lower(): str(c) for c in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


def shown_names(names) -> str:
    """The first five of ``names`` for an error message, then how many more there are."""
    names = list(names)
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line (whitespace runs as single spaces), or its type's name
    when it has none: the cause quoted inside one of this package's error messages."""
    return " ".join(str(exc).split()) or type(exc).__name__
