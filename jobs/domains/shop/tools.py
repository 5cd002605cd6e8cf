"""Tools of the shop-support assistant: order status and return policies of an online store.

They read the synthetic order table in ``data/shop`` (or ``PROMPTGATE_SHOP_DATA``) and return
JSON text with the fields this domain's simulator profile reads (``sim_profile.yaml``):
``summary``, ``next_step``, ``tracking``, ``needs_human`` and ``error``. An unknown order
number returns an ``error`` the agent can quote, never a crash.
"""

from __future__ import annotations

import csv
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated

DATA_DIR = Path(os.environ.get("PROMPTGATE_SHOP_DATA", Path(__file__).resolve().parents[3] / "data" / "shop"))
RETURNS = {  # return window in days, condition, refund days; 0 days: no returns
    "electronics": (14, "in the original packaging", 7),
    "clothing": (30, "unworn and with tags", 5),
    "furniture": (60, "unassembled", 10),
    "groceries": (0, "", 0),
}


@lru_cache(maxsize=1)
def _orders() -> dict[str, dict]:
    with open(DATA_DIR / "orders.csv", newline="") as f:
        return {r["order_id"].upper(): r for r in csv.DictReader(f)}


def order_status(order_id: Annotated[str, "the order number as written in the question, e.g. A-10234"]) -> str:
    """Where an order is: shipped, still processing, or reported damaged or lost."""
    key = (order_id or "").strip().upper()
    o = _orders().get(key)
    if o is None:
        return json.dumps({"error": f"No order {order_id} in our records."})
    if o["status"] == "processing":
        return json.dumps({"summary": f"Order {key} ({o['items']} item{'s' if o['items'] != '1' else ''}) was ordered on {o['ordered']} and has not "
                                      "shipped yet",
                           "next_step": "we will email the tracking number as soon as it ships"})
    if o["status"] in ("damaged", "lost"):
        return json.dumps({"summary": f"Order {key} shipped with {o['carrier']} on {o['shipped']} and was reported "
                                      f"{o['status']}",
                           "next_step": "we will send a replacement or a refund, whichever you prefer",
                           "needs_human": True, "tracking": o["tracking"]})
    return json.dumps({"summary": f"Order {key} shipped on {o['shipped']} with {o['carrier']} and should arrive by "
                                  f"{o['eta']}",
                       "next_step": "follow the parcel on the carrier's site", "tracking": o["tracking"]})


def return_policy(category: Annotated[str, "the product category, one of: electronics, clothing, furniture, groceries"]) -> str:
    """How and until when a product of one category can be returned, and how fast the refund comes."""
    c = (category or "").strip().lower()
    if c not in RETURNS:
        return json.dumps({"error": f"No return policy for '{category}'. Categories: {', '.join(RETURNS)}."})
    days, condition, refund = RETURNS[c]
    if not days:
        return json.dumps({"summary": f"{c.capitalize()} cannot be returned once delivered",
                           "next_step": "tell us within 2 days if something arrived spoiled"})
    return json.dumps({"summary": f"{c.capitalize()} can be returned within {days} days of delivery, {condition}; the "
                                  f"refund reaches your card within {refund} business days",
                       "next_step": "start the return from your order page"})


TOOLS = [order_status, return_policy]
