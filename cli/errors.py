"""The one place that maps domain errors to the exit codes of docs/design.md §5."""

from __future__ import annotations

from royalty.errors import (
    DataError,
    InputMissingError,
    IOFailure,
    OutputError,
    RoyaltyError,
    TrainingError,
    UsageError,
)

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_DATAERR = 65
EXIT_NOINPUT = 66
EXIT_CANTCREAT = 73
EXIT_IOERR = 74
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), as shells report it

# Most specific class first: the first match wins.
EXIT_CODES: tuple[tuple[type[RoyaltyError], int], ...] = (
    (UsageError, EXIT_USAGE),
    (DataError, EXIT_DATAERR),
    (InputMissingError, EXIT_NOINPUT),
    (OutputError, EXIT_CANTCREAT),
    (IOFailure, EXIT_IOERR),
    (TrainingError, EXIT_UNEXPECTED),  # a numerical failure, reported as such
)


def exit_code_for(error: BaseException) -> int:
    for cls, code in EXIT_CODES:
        if isinstance(error, cls):
            return code
    return EXIT_UNEXPECTED
