"""Dated FX rates: ``date,currency,eur_per_unit`` (CONTRACT §3 ``PULSE_FX_RATES``).

An amount converts at the latest row dated on or before the event's UTC day. For a day
before a currency's first row the earliest row is used (the table's oldest knowledge).
EUR is always 1.
"""

from __future__ import annotations

import bisect
import csv
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path

from ingest.errors import ConfigError

__all__ = ["DEFAULT_FX_FILE", "FxRates", "load_fx_rates"]

DEFAULT_FX_FILE = Path(str(resources.files("ingest") / "data" / "fx_rates.csv"))
_MS_PER_DAY = 86_400_000
# Far above any currency's (a few EUR at most), and small enough that any amount an event
# may carry (up to 10^9) stays a finite, exact-enough EUR amount.
_MAX_RATE = 1e6


@dataclass(frozen=True)
class FxRates:
    """EUR-per-unit rates by currency, each a date-sorted list."""

    _days: dict[str, list[int]] = field(default_factory=dict)  # epoch day numbers
    _rates: dict[str, list[float]] = field(default_factory=dict)

    @property
    def currencies(self) -> frozenset[str]:
        """Every currency the table knows (EUR always)."""
        return frozenset(self._days) | {"EUR"}

    def rate(self, currency: str, ts_ms: int) -> float:
        """EUR per unit of ``currency`` for an event at ``ts_ms`` (epoch milliseconds)."""
        if currency == "EUR":
            return 1.0
        days = self._days[currency]
        i = bisect.bisect_right(days, ts_ms // _MS_PER_DAY) - 1
        return self._rates[currency][max(i, 0)]

    def to_eur(self, amount: float, currency: str, ts_ms: int) -> float:
        """Convert ``amount`` of ``currency`` to EUR at the event's dated rate."""
        return amount * self.rate(currency, ts_ms)

    def rows(self) -> list[tuple[date, str, float]]:
        """All rows, for loading the table into the warehouse."""
        out = []
        for cur, days in self._days.items():
            for day, rate in zip(days, self._rates[cur], strict=True):
                out.append((datetime.fromtimestamp(day * 86400, UTC).date(), cur, rate))
        return sorted(out)


def load_fx_rates(path: Path | None = None) -> FxRates:
    """Read a rates CSV (default: the dated file shipped with Pulse)."""
    path = path or DEFAULT_FX_FILE
    table: dict[str, list[tuple[int, float]]] = {}
    try:
        with path.open(newline="") as fh:
            for n, row in enumerate(csv.DictReader(fh), start=2):
                try:
                    day = date.fromisoformat(row["date"]).toordinal() - date(1970, 1, 1).toordinal()
                    cur, rate = row["currency"].strip().upper(), float(row["eur_per_unit"])
                except (KeyError, ValueError, AttributeError) as exc:
                    raise ConfigError(f"PULSE_FX_RATES: {path} line {n}: {exc}") from None
                if len(cur) != 3 or not (cur.isascii() and cur.isalpha()):
                    raise ConfigError(f"PULSE_FX_RATES: {path} line {n}: bad currency {cur!r}")
                if not 0 < rate <= _MAX_RATE:  # also NaN and infinities
                    raise ConfigError(
                        f"PULSE_FX_RATES: {path} line {n}: rate must be > 0 and <= {_MAX_RATE:g}"
                    )
                table.setdefault(cur, []).append((day, rate))
    except OSError as exc:
        raise ConfigError(f"PULSE_FX_RATES: cannot read {path}: {exc.strerror}") from None
    days = {c: [d for d, _ in sorted(v)] for c, v in table.items()}
    rates = {c: [r for _, r in sorted(v)] for c, v in table.items()}
    return FxRates(days, rates)
