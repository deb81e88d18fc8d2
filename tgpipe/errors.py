"""The one error type for a user's mistake.

Anything a user can get wrong (a file, a name, a number on the command line) raises
`InputError` with one line that says what is wrong and what to do. The command line prints
that line and exits with status 2; it never shows a traceback for one.
"""

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input from the user: the message is one line, fit to print as it is."""
