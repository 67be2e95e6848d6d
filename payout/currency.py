"""ISO 4217 currencies and exact money parsing.

Money never passes through a float: amounts arrive as decimal strings and become
integers of the currency's minor unit (cents for USD, yen for JPY, fils for BHD).
The table is shipped in the code rather than taken from the platform's locale data so
that the same input gives the same statement on every machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Active ISO 4217 codes (List One) → minor-unit exponent. Codes whose minor unit is
# "N.A." (precious metals, SDR, bond-market units, testing codes) are listed
# separately: no one can be paid an exact number of their minor units.
MINOR_UNITS: dict[str, int] = {
    "AED": 2, "AFN": 2, "ALL": 2, "AMD": 2, "ANG": 2, "AOA": 2, "ARS": 2, "AUD": 2,
    "AWG": 2, "AZN": 2, "BAM": 2, "BBD": 2, "BDT": 2, "BGN": 2, "BHD": 3, "BIF": 0,
    "BMD": 2, "BND": 2, "BOB": 2, "BOV": 2, "BRL": 2, "BSD": 2, "BTN": 2, "BWP": 2,
    "BYN": 2, "BZD": 2, "CAD": 2, "CDF": 2, "CHE": 2, "CHF": 2, "CHW": 2, "CLF": 4,
    "CLP": 0, "CNY": 2, "COP": 2, "COU": 2, "CRC": 2, "CUC": 2, "CUP": 2, "CVE": 2,
    "CZK": 2, "DJF": 0, "DKK": 2, "DOP": 2, "DZD": 2, "EGP": 2, "ERN": 2, "ETB": 2,
    "EUR": 2, "FJD": 2, "FKP": 2, "GBP": 2, "GEL": 2, "GHS": 2, "GIP": 2, "GMD": 2,
    "GNF": 0, "GTQ": 2, "GYD": 2, "HKD": 2, "HNL": 2, "HTG": 2, "HUF": 2, "IDR": 2,
    "ILS": 2, "INR": 2, "IQD": 3, "IRR": 2, "ISK": 0, "JMD": 2, "JOD": 3, "JPY": 0,
    "KES": 2, "KGS": 2, "KHR": 2, "KMF": 0, "KPW": 2, "KRW": 0, "KWD": 3, "KYD": 2,
    "KZT": 2, "LAK": 2, "LBP": 2, "LKR": 2, "LRD": 2, "LSL": 2, "LYD": 3, "MAD": 2,
    "MDL": 2, "MGA": 2, "MKD": 2, "MMK": 2, "MNT": 2, "MOP": 2, "MRU": 2, "MUR": 2,
    "MVR": 2, "MWK": 2, "MXN": 2, "MXV": 2, "MYR": 2, "MZN": 2, "NAD": 2, "NGN": 2,
    "NIO": 2, "NOK": 2, "NPR": 2, "NZD": 2, "OMR": 3, "PAB": 2, "PEN": 2, "PGK": 2,
    "PHP": 2, "PKR": 2, "PLN": 2, "PYG": 0, "QAR": 2, "RON": 2, "RSD": 2, "RUB": 2,
    "RWF": 0, "SAR": 2, "SBD": 2, "SCR": 2, "SDG": 2, "SEK": 2, "SGD": 2, "SHP": 2,
    "SLE": 2, "SLL": 2, "SOS": 2, "SRD": 2, "SSP": 2, "STN": 2, "SVC": 2, "SYP": 2,
    "SZL": 2, "THB": 2, "TJS": 2, "TMT": 2, "TND": 3, "TOP": 2, "TRY": 2, "TTD": 2,
    "TWD": 2, "TZS": 2, "UAH": 2, "UGX": 0, "USD": 2, "USN": 2, "UYI": 0, "UYU": 2,
    "UYW": 4, "UZS": 2, "VED": 2, "VES": 2, "VND": 0, "VUV": 0, "WST": 2, "XAF": 0,
    "XCD": 2, "XCG": 2, "XOF": 0, "XPF": 0, "YER": 2, "ZAR": 2, "ZMW": 2, "ZWG": 2,
    "ZWL": 2,
}  # fmt: skip

NO_MINOR_UNIT: frozenset[str] = frozenset(
    {"XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA", "XXX"}
)

# Plain decimal notation only: no exponent, no grouping separators, no sign other than
# a leading minus. "1,000" or "1.000" can mean a thousand in some locales; refusing
# anything but one decimal point keeps an amount from being misread.
_DECIMAL = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")  # [0-9], not \d: that would accept Arabic-Indic digits


class AmountError(ValueError):
    """An amount or currency code is malformed; callers decide usage vs data error."""


@dataclass(frozen=True)
class Currency:
    code: str
    exponent: int

    @property
    def scale(self) -> int:
        return 10**self.exponent


def currency(code: str) -> Currency:
    """Look up an ISO 4217 code (case-insensitive) or raise AmountError."""
    normal = code.strip().upper()
    if normal in MINOR_UNITS:
        return Currency(normal, MINOR_UNITS[normal])
    if normal in NO_MINOR_UNIT:
        raise AmountError(f"{normal} is an ISO 4217 code without a minor unit; it cannot be paid out")
    raise AmountError(f"{code!r} is not an active ISO 4217 currency code")


def parse_minor(text: str, cur: Currency, *, allow_negative: bool = False) -> int:
    """Parse a decimal string into integer minor units of `cur`, exactly."""
    match = _DECIMAL.fullmatch(text.strip())
    if match is None:
        raise AmountError(f"{text!r} is not a plain decimal amount (like 1234.56)")
    sign, whole, frac = match.group(1), match.group(2), match.group(3) or ""
    if len(frac) > cur.exponent:
        # Even trailing zeros are refused: "10.000" USD is more likely ten thousand
        # written with a grouping dot than ten dollars.
        allowed = f"{cur.exponent} decimal{'s' if cur.exponent != 1 else ''}" if cur.exponent else "no decimals"
        given = f"{len(frac)} decimal{'s' if len(frac) != 1 else ''}"
        raise AmountError(f"{text.strip()!r} has {given}; {cur.code} allows {allowed}")
    minor = int(whole) * cur.scale + (int(frac.ljust(cur.exponent, "0")) if cur.exponent else 0)
    if sign:
        minor = -minor
    if minor < 0 and not allow_negative:
        raise AmountError(f"{text.strip()!r} is negative")
    return minor


def format_minor(minor: int, cur: Currency) -> str:
    """Integer minor units → decimal string with exactly the currency's decimals."""
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), cur.scale)
    if cur.exponent == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:0{cur.exponent}d}"
