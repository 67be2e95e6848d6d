"""Renderers of the statement document: json, jsonl, csv, table, beancount, hledger.

Every renderer works from the finished document only, so each format says exactly what
the JSON says. The plain-text accounting formats book the statement as one balanced
transaction: the revenue share as an expense, each owner's amount as a payable, and
carried-forward balances as a separate payable (owed, not paid).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import unicodedata
from collections.abc import Callable
from typing import Any

FORMATS = ("json", "jsonl", "csv", "table", "beancount", "hledger")
DETAIL_FORMATS = ("json", "jsonl")

EXPENSE_ACCOUNT = "Expenses:Royalties:Revenue-Share"
PAYABLE_ROOT = "Liabilities:Royalties:Payable"
CARRIED_ROOT = "Liabilities:Royalties:Carried-Forward"

CSV_COLUMNS = (
    "statement_id",
    "owner",
    "images",
    "value_sum",
    "share",
    "amount_minor",
    "amount",
    "carried_forward_minor",
    "carried_forward",
    "currency",
    "status",
    "idempotency_key",
)

_VERBATIM_COMPONENT = re.compile(r"[A-Z0-9][A-Za-z0-9-]*")


def render(doc: dict[str, Any], fmt: str) -> str:
    renderer: dict[str, Callable[[dict[str, Any]], str]] = {
        "json": render_json,
        "jsonl": render_jsonl,
        "csv": render_csv,
        "table": render_table,
        "beancount": render_beancount,
        "hledger": render_hledger,
    }
    return renderer[fmt](doc)


def render_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def render_jsonl(doc: dict[str, Any]) -> str:
    """One record per payee, then (with --detail) one per owner line of each sale."""
    head = {
        "format_version": doc["format_version"],
        "statement_id": doc["statement_id"],
        "created_at": doc["created_at"],
        "currency": doc["currency"]["code"],
    }
    lines = [{**head, "record": "payee", **payee} for payee in doc["payees"]]
    for sale in doc.get("sale_details", []):
        sale_head = {"sale_id": sale["sale_id"], "target_id": sale["target_id"], "date": sale["date"]}
        for line in sale["lines"]:
            lines.append(
                {**head, "record": "sale_line", **sale_head, "sale_amount": sale["amount"], "rule": sale["rule"], **line}
            )
    return "".join(json.dumps(line, ensure_ascii=False, allow_nan=False) + "\n" for line in lines)


def render_csv(doc: dict[str, Any]) -> str:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for p in doc["payees"]:
        writer.writerow(
            [
                doc["statement_id"],
                p["owner"],
                p["images"],
                p["value_sum_decimal"],
                p["share"],
                p["amount"]["minor"],
                p["amount"]["amount"],
                p["carried_forward"]["minor"],
                p["carried_forward"]["amount"],
                doc["currency"]["code"],
                p["status"],
                p["idempotency_key"],
            ]
        )
    return out.getvalue()


def summary_rows(doc: dict[str, Any]) -> tuple[tuple[str, ...], list[tuple[str, ...]], tuple[str, ...]]:
    """Header, payee rows and totals row shared by the text table and the rich summary."""
    header = ("owner", "images", "value sum", "share", "amount", "carried forward", "status")
    rows = [
        (
            p["owner"],
            str(p["images"]),
            p["value_sum_decimal"],
            p["share"],
            p["amount"]["amount"],
            p["carried_forward"]["amount"],
            p["status"],
        )
        for p in doc["payees"]
    ]
    t = doc["totals"]
    total = ("total", str(sum(p["images"] for p in doc["payees"])), "", "", t["paid"]["amount"],
             t["carried_forward"]["amount"], f"{t['payees_paid']} paid")  # fmt: skip
    return header, rows, total


def statement_title(doc: dict[str, Any]) -> str:
    cur = doc["currency"]
    return (
        f"Payout statement {doc['statement_id'][:16]} · {doc['created_at']} · revenue "
        f"{doc['revenue']['amount']} {cur['code']} · basis {doc['policy']['basis']}"
    )


def render_table(doc: dict[str, Any]) -> str:
    header, rows, total = summary_rows(doc)
    numeric = {1, 2, 3, 4, 5}
    widths = [max(len(r[i]) for r in [header, total, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        parts = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    body = [statement_title(doc), "", line(header), rule, *(line(r) for r in rows), rule, line(total)]
    return "\n".join(body) + "\n"


def account_component(owner: str) -> str:
    """An account-name component both beancount and hledger accept, stable per owner.

    Owner ids that already are valid components are used as they are; any other id is
    sanitised and suffixed with a hash of the exact id, so two owners never share an
    account and the same owner gets the same account in every statement.
    """
    if _VERBATIM_COMPONENT.fullmatch(owner):
        return owner
    # Accents fold to their base letter (ü → u) so the account stays recognisable.
    folded = unicodedata.normalize("NFKD", owner).encode("ascii", "ignore").decode("ascii")
    cleaned = re.sub(r"[^A-Za-z0-9]+", "-", folded).strip("-")
    cleaned = cleaned[:1].upper() + cleaned[1:] if cleaned else "Owner"
    digest = hashlib.sha256(owner.encode("utf-8")).hexdigest()[:8]
    return f"{cleaned}-{digest}"


def _postings(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(account, signed decimal amount, payee) for every non-zero owner balance."""
    postings = []
    for p in doc["payees"]:
        component = account_component(p["owner"])
        if p["amount"]["minor"]:
            postings.append((f"{PAYABLE_ROOT}:{component}", "-" + p["amount"]["amount"], p))
        if p["carried_forward"]["minor"]:
            postings.append((f"{CARRIED_ROOT}:{component}", "-" + p["carried_forward"]["amount"], p))
    return postings


def _bean_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ledger_header(doc: dict[str, Any], comment: str) -> list[str]:
    prov = doc["provenance"]
    return [
        f"{comment} royalty payout statement {doc['statement_id']}",
        f"{comment} created {doc['created_at']} by royalty {prov['tool_version']}; run {prov['run_id']}",
        f"{comment} values sha256 {prov['values_sha256']}; basis {doc['policy']['basis']}",
        f"{comment} {CARRIED_ROOT} holds balances below the minimum payout: owed later, not paid now",
        "",
    ]


def render_beancount(doc: dict[str, Any]) -> str:
    code = doc["currency"]["code"]
    date = doc["created_at"][:10]
    postings = _postings(doc)
    lines = _ledger_header(doc, ";")
    if not postings:
        return "\n".join(lines)
    accounts = [EXPENSE_ACCOUNT, *dict.fromkeys(a for a, _, _ in postings)]
    lines += [f"{date} open {account} {code}" for account in accounts]
    lines += [
        "",
        f'{date} * "royalty" {_bean_string("Revenue share, statement " + doc["statement_id"][:16])}',
        f"  statement-id: {_bean_string(doc['statement_id'])}",
        f"  run-id: {_bean_string(doc['provenance']['run_id'])}",
        f"  values-sha256: {_bean_string(doc['provenance']['values_sha256'])}",
        f"  {EXPENSE_ACCOUNT}  {doc['revenue']['amount']} {code}",
    ]
    for account, amount, p in postings:
        lines += [
            f"  {account}  {amount} {code}",
            f"    owner: {_bean_string(p['owner'])}",
            f"    idempotency-key: {_bean_string(p['idempotency_key'])}",
        ]
    return "\n".join(lines) + "\n"


def _hledger_owner_tag(owner: str) -> str:
    # A tag value runs to the next comma or the end of the line; any owner id that could
    # end it early, or is not plain text, is written as a JSON string with commas escaped.
    if re.fullmatch(r"[^\s,;:\x00-\x1f\x7f]+(?: [^\s,;:\x00-\x1f\x7f]+)*", owner):
        return f"owner:{owner}"
    return "owner_json:" + json.dumps(owner, ensure_ascii=True).replace(",", "\\u002c")


def render_hledger(doc: dict[str, Any]) -> str:
    code = doc["currency"]["code"]
    exponent = doc["currency"]["exponent"]
    date = doc["created_at"][:10]
    postings = _postings(doc)
    lines = _ledger_header(doc, ";")
    if not postings:
        return "\n".join(lines)
    # Declaring the commodity's format pins '.' as the decimal mark, so "1.000 BHD" can
    # never be read as one thousand.
    sample = "1000." + "0" * exponent if exponent else "1000."
    lines += [
        f"commodity {sample} {code}",
        "",
        f"{date} * royalty payout statement {doc['statement_id'][:16]}  ; "
        f"statement_id:{doc['statement_id']}, run_id:{_hledger_tag_value(doc['provenance']['run_id'])}",
        f"    {EXPENSE_ACCOUNT}  {doc['revenue']['amount']} {code}",
    ]
    for account, amount, p in postings:
        lines.append(
            f"    {account}  {amount} {code}  ; {_hledger_owner_tag(p['owner'])}, "
            f"idempotency_key:{p['idempotency_key']}"
        )
    return "\n".join(lines) + "\n"


def _hledger_tag_value(text: str) -> str:
    return re.sub(r"[,\s;]+", "_", text)
