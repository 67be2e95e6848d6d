"""JSON Schema (draft 2020-12) of the payout statement and of its JSON Lines records.

`royalty schema payout` prints it; the tests validate every document the tool writes
against it, so the schema cannot drift from the code unnoticed.
"""

from __future__ import annotations

from typing import Any

from royalty.payout.policy import ALLOCATION, CLIP_AT, TIE_BREAK, Basis, OnNoPositive
from royalty.payout.statement import DOCUMENT, FORMAT_VERSION, STATUSES

SCHEMA_ID = "https://royalty.invalid/schema/payout-statement-v1.json"

_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_DECIMAL = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"}
_SHARE = {
    "type": "string",
    "pattern": r"^[0-9]+(\.[0-9]+)?$",
    "description": "Exact share of the revenue before rounding to minor units, as a decimal "
    "rounded to 10 significant digits.",
}
_VALUE_SUM = {
    "type": "number",
    "description": "Sum of the owner's values (the basis column) over the targets paid for: all "
    "targets for --revenue, the targets of the sales for --sales. Computed exactly, rounded once.",
}
_VALUE_SUM_DECIMAL = {"type": "string", "description": "value_sum as the shortest decimal that round-trips (repr)."}


def _obj(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
        **extra,
    }


def payout_schema() -> dict[str, Any]:
    # One JSON Schema document written out as a literal: long, but a reader compares it
    # with the statement field by field, which a split into functions would only hinder.
    money = _obj(
        {
            "minor": {"type": "integer", "minimum": 0, "description": "Integer minor units (cents, yen, fils)."},
            "amount": {**_DECIMAL, "description": "The same amount as a decimal string with the currency's decimals."},
        }
    )
    payee = _obj(
        {
            "owner": {"type": "string", "minLength": 1},
            "images": {"type": "integer", "minimum": 0, "description": "Training images of this owner in the run."},
            "value_sum": _VALUE_SUM,
            "value_sum_decimal": _VALUE_SUM_DECIMAL,
            "share": _SHARE,
            "amount": {"$ref": "#/$defs/money", "description": "Paid now."},
            "carried_forward": {
                "$ref": "#/$defs/money",
                "description": "Allocated but below --min-payout: owed later, never given to others.",
            },
            "status": {
                "enum": list(STATUSES),
                "description": "paid; carried_forward (below the minimum payout); not_positive (the "
                "owner's value was ≤ 0, clipped to nothing); rounded_to_zero (a positive share smaller "
                "than one minor unit).",
            },
            "idempotency_key": {**_SHA256, "description": "sha256(statement_id + newline + owner)."},
        }
    )
    sale_line = _obj(
        {
            "owner": {"type": "string", "minLength": 1},
            "value_sum": {"type": "number", "description": "The owner's value for this sale's target."},
            "value_sum_decimal": _VALUE_SUM_DECIMAL,
            "share": _SHARE,
            "amount": {"$ref": "#/$defs/money", "description": "Allocated from this sale, before --min-payout."},
        }
    )
    sale_detail = _obj(
        {
            "sale_id": {"type": "string", "minLength": 1},
            "target_id": {"type": "string", "minLength": 1},
            "date": {"type": ["string", "null"], "format": "date"},
            "amount": {"$ref": "#/$defs/money"},
            "rule": {"enum": ["value", "equal"]},
            "lines": {"type": "array", "items": {"$ref": "#/$defs/sale_line"}},
        }
    )
    statement = _obj(
        {
            "format_version": {"const": FORMAT_VERSION},
            "document": {"const": DOCUMENT},
            "statement_id": {
                **_SHA256,
                "description": "sha256 of the inputs and policy: the same payout always gets the same id.",
            },
            "created_at": {"type": "string", "format": "date-time", "pattern": "Z$"},
            "mode": {"enum": ["revenue", "sales"]},
            "currency": _obj(
                {
                    "code": {"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217 code."},
                    "exponent": {"type": "integer", "minimum": 0, "maximum": 4},
                }
            ),
            "revenue": {"$ref": "#/$defs/money"},
            "policy": _obj(
                {
                    "basis": {"enum": [b.value for b in Basis]},
                    "clip_at": {"const": CLIP_AT},
                    "on_no_positive": {"enum": [r.value for r in OnNoPositive]},
                    "min_payout": {"$ref": "#/$defs/money"},
                    "allocation": {"const": ALLOCATION},
                    "tie_break": {"const": TIE_BREAK},
                    "target_weighting": {"enum": ["equal", "per_target", "per_sale"]},
                }
            ),
            "provenance": _obj(
                {
                    "tool": {"const": "royalty"},
                    "tool_version": {"type": "string"},
                    "run_id": {"type": "string"},
                    "model_sha256": {"anyOf": [_SHA256, {"type": "null"}]},
                    "dataset_manifest_sha256": {"anyOf": [_SHA256, {"type": "null"}]},
                    "values_sha256": _SHA256,
                    "values_column": {"enum": ["value", "value_specific"]},
                    "attribution": {
                        "type": ["string", "null"],
                        "description": "The `royalty attribute` NAME the values come from; null: the run's own.",
                    },
                    "ledger_sha256": {"anyOf": [_SHA256, {"type": "null"}]},
                }
            ),
            "targets_paid": {"type": "integer", "minimum": 0},
            "equal_split": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Where --on-no-positive equal applied: target ids, or '*' for the total.",
            },
            "sales": {
                "anyOf": [
                    {"type": "null"},
                    _obj(
                        {
                            "count": {"type": "integer", "minimum": 1},
                            "targets": {"type": "integer", "minimum": 1},
                            "excluded": {
                                "type": "array",
                                "description": "Sales in other currencies, left out of this statement.",
                                "items": _obj(
                                    {
                                        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                                        "count": {"type": "integer", "minimum": 1},
                                        "amount": _DECIMAL,
                                    }
                                ),
                            },
                        }
                    ),
                ]
            },
            "payees": {"type": "array", "items": {"$ref": "#/$defs/payee"}},
            "totals": _obj(
                {
                    "revenue": {"$ref": "#/$defs/money"},
                    "paid": {"$ref": "#/$defs/money"},
                    "carried_forward": {"$ref": "#/$defs/money"},
                    "payees": {"type": "integer", "minimum": 0},
                    "payees_paid": {"type": "integer", "minimum": 0},
                }
            ),
            "sale_details": {"type": "array", "items": {"$ref": "#/$defs/sale_detail"}},
        },
        required=[
            "format_version", "document", "statement_id", "created_at", "mode", "currency", "revenue",
            "policy", "provenance", "targets_paid", "equal_split", "sales", "payees", "totals",
        ],  # fmt: skip
    )
    jsonl_record = _obj(
        {
            "format_version": {"const": FORMAT_VERSION},
            "record": {"enum": ["payee", "sale_line"]},
            "statement_id": _SHA256,
            "created_at": {"type": "string", "format": "date-time"},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "sale_id": {"type": "string"},
            "target_id": {"type": "string"},
            "date": {"type": ["string", "null"]},
            "sale_amount": {"$ref": "#/$defs/money"},
            "rule": {"enum": ["value", "equal"]},
            **payee["properties"],
        },
        required=["format_version", "record", "statement_id", "created_at", "currency", "owner", "amount"],
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "royalty payout statement",
        "description": "Output of `royalty payout --format json`. With --format jsonl each line is "
        "a record matching $defs/jsonl_record.",
        **statement,
        "$defs": {
            "money": money,
            "payee": payee,
            "sale_line": sale_line,
            "sale_detail": sale_detail,
            "jsonl_record": jsonl_record,
        },
    }
