"""Domain errors raised by the library.

The library never chooses exit codes; `royalty.cli.errors` maps each class to the
exit code of docs/design.md §5 in one table.
"""

from __future__ import annotations


class RoyaltyError(Exception):
    """Base class of every error the tool reports to a user as a clear message."""


class UsageError(RoyaltyError):
    """The command line itself is wrong (an option value, a combination of options)."""


class DataError(RoyaltyError):
    """Input data exists but is invalid (bad metadata row, unreadable image, bad ledger)."""


class InputMissingError(RoyaltyError):
    """A required input file or folder does not exist."""


class OutputError(RoyaltyError):
    """An output cannot be created (exists and holds something else, not writable)."""


class IOFailure(RoyaltyError):
    """Reading or writing failed part-way (disk full, permission lost, ...)."""


class TrainingError(RoyaltyError):
    """Training went numerically wrong (a non-finite loss or value): no output is written."""


class UnsupportedModelError(DataError):
    """The model cannot be valued: trainable parameters no attribution rule covers, or
    per-sample gradients the engine's first-step self-check finds wrong (bad input: the
    model, not the command line)."""
