"""``pulse detect score``: the production detector over a ``timestamp,value`` CSV."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

from ingest.errors import PulseError
from ingest.times import aware
from insights.detector import score_series

__all__ = ["score_csv"]


def _parse_ts(text: str) -> datetime:
    return aware(datetime.fromisoformat(text.strip()))


def score_csv(source: Path, target: Path) -> int:
    """Score every row of ``source`` online; write ``timestamp,value,anomaly_score``."""
    timestamps: list[datetime] = []
    values: list[float] = []
    raw: list[tuple[str, str]] = []
    with source.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"timestamp", "value"} <= set(reader.fieldnames):
            raise PulseError(f"{source}: expected a header with timestamp,value")
        for line, row in enumerate(reader, start=2):
            try:
                timestamps.append(_parse_ts(row["timestamp"]))
                values.append(float(row["value"]))
            except (ValueError, TypeError) as exc:
                raise PulseError(f"{source} line {line}: {exc}") from None
            raw.append((row["timestamp"], row["value"]))
    scores = score_series(timestamps, values)
    with target.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["timestamp", "value", "anomaly_score"])
        for (ts, value), score in zip(raw, scores, strict=True):
            writer.writerow([ts, value, f"{score:.6f}"])
    return len(scores)
