"""Dated FX rates: the latest row on or before the event's UTC day."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.errors import ConfigError
from ingest.fx import load_fx_rates


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture
def rates(tmp_path: Path):
    path = tmp_path / "fx.csv"
    path.write_text(
        "date,currency,eur_per_unit\n2026-01-10,PLN,0.25\n2026-01-01,PLN,0.20\n2026-01-05,SEK,0.09\n"
    )
    return load_fx_rates(path)


def test_latest_row_on_or_before_the_utc_day(rates) -> None:
    assert rates.rate("PLN", ms(2026, 1, 9, 23, 59)) == 0.20
    assert rates.rate("PLN", ms(2026, 1, 10, 0, 0)) == 0.25
    assert rates.rate("PLN", ms(2026, 6, 1)) == 0.25
    assert rates.to_eur(100, "PLN", ms(2026, 1, 2)) == pytest.approx(20.0)


def test_before_the_first_row_the_earliest_is_used_and_eur_is_one(rates) -> None:
    assert rates.rate("SEK", ms(2025, 12, 1)) == 0.09
    assert rates.rate("EUR", ms(2020, 1, 1)) == 1.0
    assert rates.currencies == {"EUR", "PLN", "SEK"}


def test_the_shipped_table_knows_the_marketplace_currencies() -> None:
    known = load_fx_rates().currencies
    assert {"EUR", "PLN", "SEK", "DKK", "CZK", "HUF", "RON", "BGN", "GBP", "CHF"} <= known


def test_a_broken_file_names_the_setting_and_line(tmp_path: Path) -> None:
    path = tmp_path / "fx.csv"
    path.write_text("date,currency,eur_per_unit\n2026-01-01,PLN,abc\n")
    with pytest.raises(ConfigError, match=r"PULSE_FX_RATES: .* line 2"):
        load_fx_rates(path)
