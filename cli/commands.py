"""Imports every command module so each registers itself on the app."""

from royalty.cli import train  # noqa: F401
from royalty.cli import payout  # noqa: F401
from royalty.cli import schema  # noqa: F401
from royalty.cli import report  # noqa: F401
from royalty.cli import generate  # noqa: F401
from royalty.cli import attribute  # noqa: F401
from royalty.cli import audit  # noqa: F401
