"""One payout, start to finish: what the CLI calls (and what tests and scripts can call)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from royalty.errors import UsageError
from royalty.payout.currency import AmountError, Currency, currency, parse_minor
from royalty.payout.ledger import read_ledger
from royalty.payout.policy import Basis, OnNoPositive, PayoutPolicy
from royalty.payout.split import split_revenue, split_sales
from royalty.payout.statement import build_statement, created_at
from royalty.attribution.contract.opened import open_run
from royalty.payout.values import load_values

DEFAULT_CURRENCY = "USD"


@dataclass(frozen=True)
class PayoutRequest:
    run_dir: Path
    revenue: str | None = None  # decimal string, exclusive with sales
    sales: Path | None = None
    currency: str | None = None  # None: USD, or the ledger's own currency
    basis: Basis = Basis.RAW
    on_no_positive: OnNoPositive = OnNoPositive.FAIL
    min_payout: str | None = None  # decimal string in the statement currency
    detail: bool = False
    attribution: str | None = None  # pay from RUN/attributions/NAME instead of the run's values


def _currency_option(code: str) -> Currency:
    try:
        return currency(code)
    except AmountError as exc:
        raise UsageError(f"--currency: {exc}") from exc


def _amount_option(name: str, text: str, cur: Currency) -> int:
    try:
        return parse_minor(text, cur)
    except AmountError as exc:
        raise UsageError(f"{name}: {exc}") from exc


def _policy(request: PayoutRequest, cur: Currency) -> PayoutPolicy:
    minimum = _amount_option("--min-payout", request.min_payout, cur) if request.min_payout is not None else 0
    return PayoutPolicy(basis=request.basis, on_no_positive=request.on_no_positive, min_payout=minimum)


def check_request(request: PayoutRequest) -> None:
    """Usage errors first, before any file is read."""
    if (request.revenue is None) == (request.sales is None):
        raise UsageError("give exactly one of --revenue AMOUNT or --sales FILE")
    if request.detail and request.sales is None:
        raise UsageError("--detail lists per-sale lines and needs --sales FILE")
    if request.currency is not None:
        cur = _currency_option(request.currency)
        if request.revenue is None and request.min_payout is not None:
            _amount_option("--min-payout", request.min_payout, cur)
    if request.revenue is not None:
        cur = _currency_option(request.currency or DEFAULT_CURRENCY)
        if _amount_option("--revenue", request.revenue, cur) == 0:
            raise UsageError("--revenue: the amount to split must be positive")
        _policy(request, cur)


def compute_payout(request: PayoutRequest, now: str | None = None) -> dict[str, Any]:
    """Verify the run, split the money, return the statement document."""
    check_request(request)
    run = open_run(request.run_dir, request.attribution, purpose="pay out")
    values = load_values(run, request.basis)
    stamp = now if now is not None else created_at()
    if request.revenue is not None:
        cur = _currency_option(request.currency or DEFAULT_CURRENCY)
        policy = _policy(request, cur)
        split = split_revenue(values, _amount_option("--revenue", request.revenue, cur), policy)
        return build_statement(run, values.column, split, cur, policy, None, stamp)

    assert request.sales is not None
    ledger = read_ledger(request.sales, frozenset(values.targets), request.currency)
    policy = _policy(request, ledger.currency)
    split = split_sales(values, ledger, policy, detail=request.detail)
    return build_statement(run, values.column, split, ledger.currency, policy, ledger, stamp)
