"""The OTTO recsys sample as CONTRACT §5 events (data: CC BY 4.0, OTTO GmbH & Co KG,
github.com/otto-de/recsys-dataset).

Each input line is ``{"session": int, "events": [{"aid", "ts", "type"}]}`` with ``ts`` in
epoch ms. Mapping: ``clicks`` -> ``product_view``, ``carts`` -> ``add_to_cart``,
``orders`` -> ``purchase``; ``session`` -> both ``session_id`` and ``user_id``;
``event_id`` = ``otto-{session}-{i}`` (i = position in the session's list);
``product_id`` = ``str(aid)``. Product events carry no price or currency. Each ``orders``
entry becomes one purchase with ``order_id`` = ``otto-{session}-{ts}``, revenue 0 EUR and
one item ``{product_id, price 0, quantity 1}`` -- so OTTO order entries of one session
sharing a ts share an order_id, and only the first of them counts as the order (its one
item gives the units); the others are duplicate-order purchases.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["OTTO_SAMPLE", "otto_to_events"]

OTTO_SAMPLE = Path(__file__).resolve().parents[1] / "data" / "otto_train_sample.jsonl"
_TYPES = {"clicks": "product_view", "carts": "add_to_cart", "orders": "purchase"}


def otto_to_events(path: str | Path = OTTO_SAMPLE) -> list[dict[str, Any]]:
    """CONTRACT §5 events for every event of an OTTO ``train`` JSONL file, in file order."""
    out: list[dict[str, Any]] = []
    with Path(path).open("rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            record = json.loads(line)
            session = str(record["session"])
            for i, raw in enumerate(record["events"]):
                event: dict[str, Any] = {
                    "event_id": f"otto-{session}-{i}",
                    "type": _TYPES[raw["type"]],
                    "ts": int(raw["ts"]),
                    "user_id": session,
                    "session_id": session,
                }
                product_id = str(raw["aid"])
                if event["type"] == "purchase":
                    event.update(
                        order_id=f"otto-{session}-{raw['ts']}",
                        revenue=0,
                        currency="EUR",
                        items=[{"product_id": product_id, "price": 0, "quantity": 1}],
                    )
                else:
                    event["product_id"] = product_id
                out.append(event)
    return out
