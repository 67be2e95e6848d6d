"""The payout statement document (schema: royalty.payout.schema).

Everything a person signing off a payout needs is in the document itself: what was
paid, to whom, under which policy, from which run and ledger — and ids that are the
same every time the same payout is computed, so paying it twice can be refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

from royalty import __version__
from royalty.errors import DataError, UsageError
from royalty.payout.currency import Currency, format_minor
from royalty.payout.ledger import Ledger
from royalty.payout.policy import PayoutPolicy
from royalty.payout.split import SaleSplit, Split
from royalty.attribution.contract.opened import OpenedRun

FORMAT_VERSION = 1
DOCUMENT = "royalty.payout_statement"
SHARE_DIGITS = 10

STATUS_PAID = "paid"
STATUS_CARRIED = "carried_forward"
STATUS_NOT_POSITIVE = "not_positive"
STATUS_ROUNDED = "rounded_to_zero"
STATUSES = (STATUS_PAID, STATUS_CARRIED, STATUS_NOT_POSITIVE, STATUS_ROUNDED)


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def created_at(environ: dict[str, str] | None = None) -> str:
    """Now in UTC, or SOURCE_DATE_EPOCH when set (reproducible builds convention)."""
    env = os.environ if environ is None else environ
    epoch = env.get("SOURCE_DATE_EPOCH")
    if epoch is not None and epoch.strip():
        try:
            moment = dt.datetime.fromtimestamp(int(epoch), tz=dt.timezone.utc)
        except (ValueError, OverflowError, OSError) as exc:
            raise UsageError(f"SOURCE_DATE_EPOCH={epoch!r} is not a Unix timestamp in seconds") from exc
    else:
        moment = dt.datetime.now(tz=dt.timezone.utc)
    return moment.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def share_string(value: Fraction, digits: int = SHARE_DIGITS) -> str:
    """A non-negative fraction as a plain decimal string, rounded to `digits` significant digits."""
    if value == 0:
        return "0"
    with localcontext() as ctx:
        ctx.prec = digits
        quotient = Decimal(value.numerator) / Decimal(value.denominator)
    return format(quotient, "f")


def value_float(value: Fraction, where: str) -> float:
    try:
        result = float(value)
    except OverflowError:
        result = float("inf")
    if result in (float("inf"), float("-inf")):
        raise DataError(f"the value sum of {where} overflows a 64-bit float")
    return result


def money(minor: int, cur: Currency) -> dict[str, Any]:
    return {"minor": minor, "amount": format_minor(minor, cur)}


def dataset_manifest_sha256(manifest: dict[str, Any]) -> str | None:
    """One hash over the run's input image hashes (recorded one, else computed)."""
    recorded = manifest.get("inputs_sha256")
    if isinstance(recorded, str) and recorded:
        return recorded
    inputs = manifest.get("inputs")
    if inputs is None:
        return None
    return sha256_hex(canonical_json(inputs))


def build_statement(
    run: OpenedRun,
    values_column: str,
    split: Split,
    cur: Currency,
    policy: PayoutPolicy,
    ledger: Ledger | None,
    now: str,
) -> dict[str, Any]:
    """The statement of `split`; per-sale lines when the split carries them (`--detail`)."""
    manifest = run.manifest
    model = manifest.get("outputs", {}).get("model")
    mode = "sales" if ledger else "revenue"
    provenance = {
        "tool": "royalty",
        "tool_version": __version__,
        "run_id": str(manifest.get("run_id", "")),
        "model_sha256": model if isinstance(model, str) else None,
        "dataset_manifest_sha256": dataset_manifest_sha256(manifest),
        "values_sha256": run.values_sha256,
        "values_column": values_column,
        "attribution": run.attribution,
        "ledger_sha256": ledger.sha256 if ledger else None,
    }
    policy_doc = {
        **{k: v for k, v in policy.as_dict().items() if k != "min_payout_minor"},
        "min_payout": money(policy.min_payout, cur),
        "target_weighting": "per_sale" if ledger else ("per_target" if policy.per_target else "equal"),
    }
    # The id covers what determines the money, not the tool version or the clock:
    # recomputing the same payout later must give the same id and idempotency keys.
    identity = {
        "mode": mode,
        "run_id": provenance["run_id"],
        "values_sha256": run.values_sha256,
        "model_sha256": provenance["model_sha256"],
        "currency": cur.code,
        "revenue_minor": split.revenue,
        "ledger_sha256": provenance["ledger_sha256"],
        "policy": policy.as_dict(),
    }
    if not ledger and policy.per_target:
        # Kept out of every other id, so statements computed before it existed keep theirs.
        identity["revenue_split"] = "per_target"
    statement_id = sha256_hex(canonical_json(identity))
    payees = _payees(split, policy, cur, statement_id)
    paid = sum(p["amount"]["minor"] for p in payees)
    carried = sum(p["carried_forward"]["minor"] for p in payees)
    if paid + carried != split.revenue:  # the one invariant a payout must never break
        raise AssertionError(f"paid {paid} + carried {carried} != revenue {split.revenue}")

    doc: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "document": DOCUMENT,
        "statement_id": statement_id,
        "created_at": now,
        "mode": mode,
        "currency": {"code": cur.code, "exponent": cur.exponent},
        "revenue": money(split.revenue, cur),
        "policy": policy_doc,
        "provenance": provenance,
        "targets_paid": split.targets_paid,
        "equal_split": list(split.equal_rule_targets),
        "sales": _sales_summary(ledger) if ledger else None,
        "payees": payees,
        "totals": {
            "revenue": money(split.revenue, cur),
            "paid": money(paid, cur),
            "carried_forward": money(carried, cur),
            "payees": len(payees),
            "payees_paid": sum(1 for p in payees if p["status"] == STATUS_PAID),
        },
    }
    if split.sales:
        doc["sale_details"] = [_sale_detail(s, cur) for s in split.sales]
    return doc


def _payees(split: Split, policy: PayoutPolicy, cur: Currency, statement_id: str) -> list[dict[str, Any]]:
    payees = []
    for o in split.owners:
        if policy.carries_forward(o.allocated):
            amount, forward, status = 0, o.allocated, STATUS_CARRIED
        elif o.allocated > 0:
            amount, forward, status = o.allocated, 0, STATUS_PAID
        else:
            amount, forward = 0, 0
            status = STATUS_ROUNDED if o.weighted else STATUS_NOT_POSITIVE
        value = value_float(o.value, f"owner {o.owner!r}")
        payees.append(
            {
                "owner": o.owner,
                "images": o.images,
                "value_sum": value,
                "value_sum_decimal": repr(value),
                "share": share_string(o.share),
                "amount": money(amount, cur),
                "carried_forward": money(forward, cur),
                "status": status,
                "idempotency_key": sha256_hex(f"{statement_id}\n{o.owner}".encode()),
            }
        )
    return payees


def _sales_summary(ledger: Ledger) -> dict[str, Any]:
    return {
        "count": len(ledger.sales),
        "targets": len({s.target_id for s in ledger.sales}),
        "excluded": [{"currency": e.code, "count": e.count, "amount": e.amount} for e in ledger.excluded],
    }


def _sale_detail(split: SaleSplit, cur: Currency) -> dict[str, Any]:
    sale = split.sale
    return {
        "sale_id": sale.sale_id,
        "target_id": sale.target_id,
        "date": sale.date,
        "amount": money(sale.amount, cur),
        "rule": split.rule,
        "lines": [
            {
                "owner": line.owner,
                "value_sum": (v := value_float(line.value, f"owner {line.owner!r}")),
                "value_sum_decimal": repr(v),
                "share": share_string(line.share),
                "amount": money(line.amount, cur),
            }
            for line in split.lines
        ],
    }
