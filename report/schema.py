"""JSON Schema (draft 2020-12) of the summary `royalty report` prints on stdout.

The tests validate every summary against it. (`royalty schema` lists documents in
cli/schema.py's SCHEMAS; registering "report" there is one line.)
"""

from __future__ import annotations

from typing import Any

from royalty.payout.policy import Basis
from royalty.report.service import DOCUMENT, FORMAT_VERSION


def report_schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://royalty.invalid/schema/report-summary-v1.json",
        "title": "royalty report summary",
        "type": "object",
        "additionalProperties": False,
        "required": [
            "format_version", "document", "run_id", "attribution", "basis", "out", "files",
            "targets_total", "targets_shown", "targets_omitted", "top", "owners", "payout_refusal", "top_owner_matches",
        ],
        "properties": {
            "format_version": {"const": FORMAT_VERSION},
            "document": {"const": DOCUMENT},
            "run_id": {"type": ["string", "null"]},
            "attribution": {"type": ["string", "null"], "description": "--attribution NAME, or null for the run's own targets"},
            "basis": {"enum": [b.value for b in Basis]},
            "out": {"type": "string", "description": "The HTML file written."},
            "files": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 1,
                "description": "Every file written: the HTML first, then the PNG plots.",
            },
            "targets_total": {"type": "integer", "minimum": 1},
            "targets_shown": {"type": "integer", "minimum": 1},
            "targets_omitted": {"type": "integer", "minimum": 0},
            "top": {"type": "integer", "minimum": 1},
            "owners": {
                "type": "array",
                "description": "Owner totals over all targets, by owner ascending; share as payout --revenue computes it.",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["owner", "value", "share"],
                    "properties": {
                        "owner": {"type": "string"},
                        "value": {"type": "number"},
                        "share": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                },
            },
            "payout_refusal": {
                "type": ["string", "null"],
                "description": "Why royalty payout --revenue refuses this basis (every share is then 0), or null.",
            },
            "top_owner_matches": {
                "type": ["object", "null"],
                "description": "Single-style targets (metadata names an owner) whose top-paid owner is that owner.",
                "additionalProperties": False,
                "required": ["matches", "single_style_targets"],
                "properties": {
                    "matches": {"type": "integer", "minimum": 0},
                    "single_style_targets": {"type": "integer", "minimum": 1},
                },
            },
        },
    }
